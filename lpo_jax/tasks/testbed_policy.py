"""The testbed policy: a tiny char-level transformer warm-started by SFT, cached on disk.

`ensure_testbed_policy()` returns the path of a Hugging Face directory (config.json, safetensors,
tokenizer) holding the SFT warm start for the settings given, training it first if the cache has
none (`~/.cache/lpo_jax/testbed_sft/<hash of settings>`, or `$LPO_JAX_CACHE/testbed_sft/...`).
The trainer loads it like any other checkpoint (`lpo_jax.models.load_hf`, `Tokenizer.from_pretrained`).

SFT: next-token cross-entropy on the answer tokens (+ EOS) of freshly generated demonstrations
(never from the held-out region), AdamW with warmup + cosine decay, one jitted step over the NNX
state used functionally (nnx.split once, nnx.merge inside jit). It is deliberately short and its
targets drop repeated digits at a controlled rate (`slip_prob`), so that the warm-started policy's
per-prompt success spreads over (0, 1) - the regime where prompt selection and LPO matter.
After training, success rates are measured by sampling (lpo_jax.sampling.Sampler) and stored in
`sft_report.json` next to the weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lpo_jax.tasks import char_tokenizer as chars
from lpo_jax.tasks.base import Example
from lpo_jax.tasks.testbed import TestbedTaskConfig, generate_splits, sample_demonstrations, testbed_reward

CACHE_FORMAT = 1  # bump when a code change alters what a given config trains
REPORT_FILE = "sft_report.json"


@dataclasses.dataclass(frozen=True)
class TestbedPolicyConfig:
    """Everything that determines the warm-started policy (its hash names the cache entry)."""

    __test__ = False

    task: TestbedTaskConfig = TestbedTaskConfig()
    # model (qwen3 family, tied embeddings, vocab = the 64-entry char tokenizer)
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    # SFT
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    slip_prob: float = 0.3
    seed: int = 0
    # measurement (not part of training, but part of the cached report)
    spread_prompts: int = 512
    spread_samples: int = 16
    temperature: float = 1.0

    def __post_init__(self):
        if isinstance(self.task, Mapping):
            object.__setattr__(self, "task", TestbedTaskConfig(**self.task))
        if not 0.0 <= self.slip_prob < 1.0:
            raise ValueError(f"slip_prob must be in [0, 1), got {self.slip_prob}")
        for name in ("steps", "batch_size", "spread_prompts", "spread_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"TestbedPolicyConfig.{name} must be >= 1, got {getattr(self, name)}")

    def replace(self, **changes) -> "TestbedPolicyConfig":
        return dataclasses.replace(self, **changes)

    def cache_key(self) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def testbed_model_config(cfg: TestbedPolicyConfig):
    """The policy architecture (a qwen3-family ModelConfig; ~0.3M parameters by default)."""
    from lpo_jax.models.config import ModelConfig

    return ModelConfig(
        family="qwen3", vocab_size=chars.VOCAB_SIZE, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.hidden_size // cfg.num_heads, qk_norm=True,
        tie_embeddings=True, rope_theta=10000.0, max_position_embeddings=128,
        eos_token_id=chars.EOS_ID,
    )


testbed_model_config.__test__ = False


def sft_arrays(demos: Sequence[tuple[str, str]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (tokens [B, L] int32, target_mask [B, L] f32): mask 1 on answer + EOS tokens."""
    tokens = np.full((len(demos), length), chars.PAD_ID, np.int32)
    target = np.zeros((len(demos), length), np.float32)
    for i, (prompt, answer) in enumerate(demos):
        p, a = chars.encode_chars(prompt), chars.encode_chars(answer) + [chars.EOS_ID]
        if len(p) + len(a) > length:
            raise ValueError(f"demonstration {i} needs {len(p) + len(a)} tokens > {length}")
        tokens[i, : len(p) + len(a)] = p + a
        target[i, len(p) : len(p) + len(a)] = 1.0
    return tokens, target


def tiny_random_policy(path: str) -> str:
    """A 1-layer random char-level Qwen3 policy saved as an HF directory at `path` (kept if already there):
    smoke runs and tests that need a real checkpoint but no SFT."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    from flax import nnx

    from lpo_jax.models import ModelConfig, Transformer
    from lpo_jax.models.hf import save_hf
    cfg = ModelConfig(family="qwen3", vocab_size=chars.VOCAB_SIZE, hidden_size=32, intermediate_size=64,
                      num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=True, tie_embeddings=True,
                      eos_token_id=chars.EOS_ID)
    save_hf(Transformer(cfg, rngs=nnx.Rngs(0)), path)
    chars.save_char_tokenizer(path)
    return path


def make_sft_step(graphdef, tx, pad_id: int = chars.PAD_ID):
    """Jitted (state, opt_state, tokens_BL, target_BL) -> (state', opt_state', loss); ``pad_id`` marks padding."""
    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(state, tokens_BL, target_BL):
        inputs = tokens_BL[:, :-1]
        mask = (inputs != pad_id) | (jnp.arange(inputs.shape[1]) == 0)
        logits = nnx.merge(graphdef, state)(inputs, attention_mask=mask)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, tokens_BL[:, 1:, None], axis=-1)[..., 0]
        weights = target_BL[:, 1:]
        return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)

    def step(state, opt_state, tokens_BL, target_BL):
        loss, grads = jax.value_and_grad(loss_fn)(state, tokens_BL, target_BL)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def train_sft(cfg: TestbedPolicyConfig, log: Callable[[str], None] | None = None):
    """Trains the warm start from scratch -> (Transformer, losses list)."""
    import flax.nnx as nnx
    import optax

    from lpo_jax.models.transformer import Transformer

    model = Transformer(testbed_model_config(cfg), rngs=nnx.Rngs(cfg.seed))
    graphdef, state = nnx.split(model)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(cfg.warmup_steps, cfg.steps), cfg.steps, cfg.learning_rate * 0.1)
    tx = optax.adamw(schedule, b2=0.98, weight_decay=cfg.weight_decay)
    opt_state = tx.init(state)
    step = make_sft_step(graphdef, tx)
    rng = np.random.default_rng([cfg.seed, 5_200_000])
    length = cfg.task.max_prompt_chars + cfg.task.max_answer_chars + 1
    losses = []
    for i in range(cfg.steps):
        demos = sample_demonstrations(cfg.task, cfg.batch_size, rng, cfg.slip_prob)
        state, opt_state, loss = step(state, opt_state, *sft_arrays(demos, length))
        losses.append(float(loss))
        if log and (i % 50 == 0 or i == cfg.steps - 1):
            log(f"sft step {i + 1}/{cfg.steps} loss {losses[-1]:.4f}")
    return nnx.merge(graphdef, state), losses


def measure_success(model, examples: Sequence[Example], *, samples: int, temperature: float, seed: int,
                    max_new_tokens: int, chunk_prompts: int = 256, sampler=None) -> np.ndarray:
    """Per-prompt success rate [N] over `samples` sampled completions (temperature 0 = greedy, then
    `samples` should be 1), with the testbed reward, decoded like the saved tokenizer does.
    Pass `sampler` (an lpo_jax.sampling.Sampler over `model`) to reuse its compiled programs."""
    from lpo_jax.sampling import Sampler, SamplingConfig

    sampler = sampler or Sampler(model)
    scfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, eos_ids=(chars.EOS_ID,),
                          pad_id=chars.PAD_ID)
    out = np.zeros((len(examples),), np.float64)
    for start in range(0, len(examples), chunk_prompts):
        part = examples[start : start + chunk_prompts]
        res = sampler.generate([chars.encode_chars(e.prompt) for e in part], seed + start, scfg,
                               num_samples=samples)
        rewards = [testbed_reward(chars.decode_chars(res.tokens[r][res.mask[r]]), part[r // samples])
                   for r in range(len(part) * samples)]
        out[start : start + len(part)] = np.asarray(rewards).reshape(len(part), samples).mean(-1)
    return out


def spread_fraction(success: np.ndarray, low: float = 0.1, high: float = 0.9) -> float:
    """Fraction of prompts whose success rate lies strictly inside (low, high)."""
    success = np.asarray(success)
    return float(((success > low) & (success < high)).mean())


def evaluate_policy(model, cfg: TestbedPolicyConfig) -> dict[str, Any]:
    """Spread on `spread_prompts` training prompts, held-out accuracy (sampled and greedy)."""
    from lpo_jax.sampling import Sampler
    from lpo_jax.tasks.testbed import success_by

    train, heldout = generate_splits(cfg.task)
    probe = train[: cfg.spread_prompts]
    kw = dict(max_new_tokens=cfg.task.max_answer_chars + 1, sampler=Sampler(model))
    s_train = measure_success(model, probe, samples=cfg.spread_samples, temperature=cfg.temperature,
                              seed=cfg.seed + 1, **kw)
    report = {
        "spread": spread_fraction(s_train),
        "train_accuracy": float(s_train.mean()),
        "train_success_by_level": success_by(probe, s_train, "level"),
        "train_success_by_repeats": success_by(probe, s_train, "repeats"),
        "frac_all_correct": float((s_train == 1).mean()),
        "frac_all_wrong": float((s_train == 0).mean()),
        "spread_prompts": len(probe),
        "spread_samples": cfg.spread_samples,
        "temperature": cfg.temperature,
    }
    if heldout:
        s_held = measure_success(model, heldout, samples=cfg.spread_samples, temperature=cfg.temperature,
                                 seed=cfg.seed + 2, **kw)
        greedy = measure_success(model, heldout, samples=1, temperature=0.0, seed=0, **kw)
        report.update(heldout_accuracy=float(s_held.mean()), heldout_greedy_accuracy=float(greedy.mean()),
                      heldout_prompts=len(heldout))
    return report


def cache_root(name: str) -> str:
    """~/.cache/lpo_jax/<name> (or $LPO_JAX_CACHE/<name>): where cached warm starts live."""
    root = os.environ.get("LPO_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lpo_jax")
    return os.path.join(root, name)


def default_cache_root() -> str:
    return cache_root("testbed_sft")


def read_report(path: str) -> dict[str, Any]:
    with open(os.path.join(path, REPORT_FILE)) as f:
        return json.load(f)


def config_from(cls, config, seed, what: str):
    """``config`` (None = defaults, an instance, or a mapping of field values) as ``cls``; ``seed`` overrides."""
    if config is None:
        config = cls()
    elif not isinstance(config, cls):
        data = dict(config.to_dict() if hasattr(config, "to_dict") else config)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {what} settings {sorted(unknown)}; valid: {sorted(names)}")
        config = cls(**data)
    return config if seed is None else config.replace(seed=int(seed))


def write_policy_dir(path: str, model, save_tokenizer: Callable[[str], None], report: dict, *,
                     force: bool = False) -> None:
    """Saves model + tokenizer + report into a temporary directory, then renames it to ``path`` atomically
    (an interrupted or concurrent run never leaves a half-written cache entry; the first finisher wins)."""
    from lpo_jax.models.hf import save_hf

    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_hf(model, tmp)
    save_tokenizer(tmp)
    with open(os.path.join(tmp, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1)
    if force:
        shutil.rmtree(path, ignore_errors=True)
    try:
        os.rename(tmp, path)
    except OSError:  # another process finished first: keep its entry
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_testbed_policy(config: TestbedPolicyConfig | Mapping[str, Any] | None = None, *,
                          seed: int | None = None, cache_dir: str | None = None, force: bool = False,
                          log: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """Path of the cached SFT warm start for `config` (default settings; `seed` overrides
    config.seed), training and saving it first when absent -> (absolute path, trained_now).

    The directory holds config.json + model.safetensors (lpo_jax.models.save_hf), the char
    tokenizer (AutoTokenizer-loadable) and sft_report.json (settings, SFT seconds, measured spread,
    held-out accuracy). It is written to a temporary directory and renamed, so concurrent or
    interrupted runs never leave a half-written cache entry.
    """
    cfg = config_from(TestbedPolicyConfig, config, seed, "testbed policy")
    root = os.path.abspath(os.path.expanduser(cache_dir or default_cache_root()))
    path = os.path.join(root, cfg.cache_key())
    if not force and os.path.isfile(os.path.join(path, REPORT_FILE)):
        return path, False
    start = time.time()
    model, losses = train_sft(cfg, log)
    sft_s = time.time() - start
    report = {"config": dataclasses.asdict(cfg), "sft_s": sft_s, "final_loss": losses[-1],
              "num_params": testbed_model_config(cfg).num_params()}
    report.update(evaluate_policy(model, cfg))
    report["measure_s"] = time.time() - start - sft_s
    write_policy_dir(path, model, chars.save_char_tokenizer, report, force=force)
    return path, True
