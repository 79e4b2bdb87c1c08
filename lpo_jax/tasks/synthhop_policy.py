"""The SynthHop testbed policy: a tiny word-level Qwen3-style decoder warm-started by SFT, cached on disk.

`ensure_synthhop_policy(cfg)` returns the path of a Hugging Face directory (config.json, safetensors, a
word-level tokenizer, `sft_report.json`) holding the SFT warm start for `cfg`, training it first when the
cache has none (``~/.cache/lpo_jax/synthhop_sft/<hash of settings>``, or ``$LPO_JAX_CACHE/synthhop_sft``);
same temporary-directory-and-rename protocol as `testbed_policy.ensure_testbed_policy`, whose SFT step
(`make_sft_step`) and spread measure (`spread_fraction`) are reused.

SFT data: noisy scripted episodes (`synthhop_demos`: ~60% correct hop order, relation slips, retrieval
noise with retries) played in the real `SearchEnv`; tokens = prompt, then each action followed by its
observation, exactly the stream the agent loop builds; the loss covers action tokens only (observations
and the prompt are context). The policy then imitates a noisy search strategy: its per-question success
spreads over (0, 1) (multi-hop questions lower), and a prefix whose first search went wrong (wrong hop,
distractor fact) is less promising than one that went right.

Decisions [ours]: word-level vocabulary (`synthhop.synthhop_vocab`, one token per word: episodes of
~60-110 tokens instead of ~600 characters), no ``<think>`` blocks by default (`DemoConfig.think`; a
third of the decode cost), a small KB (60 entities, 4 relations) so the CPU testbed is quick, 1- to 4-hop
questions (issue #8: a wide difficulty spread, many uniformly drawn questions nearly hopeless) and 600 SFT
steps (~4 min on 2 CPU cores; per-hop success about 0.66 / 0.22 / 0.12 / 0.06, spread 0.69).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable, Mapping

import numpy as np

from lpo_jax.tasks import synthhop as sh
from lpo_jax.tasks.synthhop_demos import DemoConfig, make_demonstrations
from lpo_jax.tasks.testbed_policy import (REPORT_FILE, cache_root, config_from, make_sft_step, read_report,
                                          spread_fraction, write_policy_dir)

CACHE_FORMAT = 1
SPECIALS = ("<pad>", "<eos>", "<unk>")
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
__all__ = ["SynthHopPolicyConfig", "ensure_synthhop_policy", "build_word_tokenizer", "synthhop_world",
           "synthhop_model_config", "demo_arrays", "train_synthhop_sft", "evaluate_synthhop_policy",
           "read_report", "spread_fraction", "make_env_factory", "agent_config", "testbed_buckets",
           "episode_success", "prefix_promise", "default_cache_root"]


@dataclasses.dataclass(frozen=True)
class SynthHopPolicyConfig:
    """Everything that determines the warm-started policy (its hash names the cache entry)."""

    env: sh.SynthHopConfig = sh.SynthHopConfig(n_entities=60, relations=sh.DEFAULT_RELATIONS[:4], max_hops=4,
                                               eps_ret=0.15)
    demo: DemoConfig = DemoConfig(think=False)
    n_train: int = 256
    n_heldout: int = 96
    # model (qwen3 family, tied embeddings, vocab = synthhop_vocab)
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_len: int = 128
    sft_len: int = 80
    # SFT
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 5e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    # measurement (part of the cached report)
    spread_prompts: int = 64
    spread_samples: int = 8
    prefix_roots: int = 32
    prefix_samples: int = 4

    def __post_init__(self):
        if isinstance(self.env, Mapping):
            object.__setattr__(self, "env", sh.SynthHopConfig(**self.env))
        if isinstance(self.demo, Mapping):
            object.__setattr__(self, "demo", DemoConfig(**self.demo))
        for name in ("n_train", "n_heldout", "steps", "batch_size", "spread_prompts", "spread_samples",
                     "hidden_size", "num_layers", "max_len", "sft_len", "prefix_roots", "prefix_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"SynthHopPolicyConfig.{name} must be >= 1, got {getattr(self, name)}")

    def replace(self, **changes) -> "SynthHopPolicyConfig":
        return dataclasses.replace(self, **changes)

    def cache_key(self) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, **dataclasses.asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def synthhop_world(cfg: SynthHopPolicyConfig):
    """(kb, train examples, held-out examples): disjoint question sets, hops balanced."""
    kb = sh.make_kb(cfg.env)
    hops = tuple(range(cfg.env.min_hops, cfg.env.max_hops + 1))
    train = sh.make_dataset(kb, cfg.n_train, hops=hops, seed=cfg.env.seed + 1)
    held = sh.make_dataset(kb, cfg.n_heldout, hops=hops, seed=cfg.env.seed + 2,
                           exclude={_key(kb, e) for e in train}, uid_offset=cfg.n_train)
    return kb, train, held


def _key(kb, example):
    return (kb.entity_index[example.meta["start"]], tuple(kb.relation_index[r] for r in example.meta["relations"]))


def build_word_tokenizer(kb):
    """A `transformers.PreTrainedTokenizerFast`: one token per whitespace-separated word of SynthHop text
    (WordLevel model; decoding joins words with spaces). pad/eos/unk = ids 0/1/2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(sh.synthhop_vocab(kb, SPECIALS))}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                   padding_side="left", model_max_length=4096)


def synthhop_model_config(cfg: SynthHopPolicyConfig, vocab_size: int):
    from lpo_jax.models.config import ModelConfig

    return ModelConfig(
        family="qwen3", vocab_size=vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.hidden_size // cfg.num_heads, qk_norm=True,
        tie_embeddings=True, rope_theta=10000.0, max_position_embeddings=max(cfg.max_len, 128),
        eos_token_id=EOS_ID)


def make_env_factory(kb, cfg: SynthHopPolicyConfig, seed: int = 0):
    """make_env() for the agent loop: a fresh SearchEnv per call, its own noise seed, fresh noise on restore
    (continuations from one prefix explore different retrieval outcomes)."""
    counter = iter(range(10**12))
    return lambda: sh.make_synthhop_env(kb, cfg.env, seed=seed * 1_000_003 + next(counter),
                                        fresh_noise_on_restore=True)


def demo_arrays(demos, vocab: Mapping[str, int], length: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [B, length] int32 right-padded, target [B, length] f32: 1 on action tokens)."""
    tokens = np.full((len(demos), length), PAD_ID, np.int32)
    target = np.zeros((len(demos), length), np.float32)
    enc = lambda text: [vocab.get(w, UNK_ID) for w in text.split()]
    for i, d in enumerate(demos):
        ids, tgt = enc(d.prompt), [0.0] * len(enc(d.prompt))
        for text, is_obs in d.segments:
            part = enc(text)
            ids += part
            tgt += [0.0 if is_obs else 1.0] * len(part)
        if len(ids) > length:
            raise ValueError(f"demonstration {i} has {len(ids)} tokens > {length}; raise SynthHopPolicyConfig.sft_len")
        tokens[i, :len(ids)], target[i, :len(ids)] = ids, tgt
    return tokens, target


def train_synthhop_sft(cfg: SynthHopPolicyConfig, log: Callable[[str], None] | None = None):
    """Trains the warm start from scratch -> (Transformer, tokenizer, losses)."""
    import flax.nnx as nnx
    import optax

    from lpo_jax.models.transformer import Transformer

    kb, train, _ = synthhop_world(cfg)
    tok = build_word_tokenizer(kb)
    vocab = tok.get_vocab()
    model = Transformer(synthhop_model_config(cfg, len(vocab)), rngs=nnx.Rngs(cfg.seed))
    graphdef, state = nnx.split(model)
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, min(cfg.warmup_steps, cfg.steps),
                                                  cfg.steps, cfg.learning_rate * 0.1)
    tx = optax.adamw(schedule, b2=0.98, weight_decay=cfg.weight_decay)
    opt_state = tx.init(state)
    step = make_sft_step(graphdef, tx, pad_id=PAD_ID)
    rng = np.random.default_rng([cfg.seed, 7_300_000])
    losses = []
    for i in range(cfg.steps):
        picks = rng.integers(0, len(train), cfg.batch_size)
        demos = make_demonstrations(kb, [train[j] for j in picks], seed=int(rng.integers(2**31)), cfg=cfg.demo,
                                    env_cfg=cfg.env)
        state, opt_state, loss = step(state, opt_state, *demo_arrays(demos, vocab, cfg.sft_len))
        losses.append(float(loss))
        if log and (i % 50 == 0 or i == cfg.steps - 1):
            log(f"synthhop sft step {i + 1}/{cfg.steps} loss {losses[-1]:.4f}")
    return nnx.merge(graphdef, state), tok, losses


def agent_config(cfg: SynthHopPolicyConfig, *, temperature: float = 1.0, max_new_tokens: int | None = None,
                 max_len: int = 192):
    """AgentConfig of the testbed episodes (per-turn budget: a search action with slack). The KV cache
    (`max_len` slots) must hold the prompt's length bucket plus max_turns x (segment + observation bucket);
    use it with `testbed_buckets()` (48-slot prompt bucket)."""
    from lpo_jax.sampling import AgentConfig, SamplingConfig

    per_turn = max_new_tokens or (16 if cfg.demo.think else 8)
    scfg = SamplingConfig(max_new_tokens=per_turn, temperature=temperature, eos_ids=(EOS_ID,), pad_id=PAD_ID)
    return AgentConfig(sampling=scfg, max_turns=cfg.env.turns, max_len=max_len, max_obs_tokens=16,
                       tool_timeout_s=None, max_workers=1)


def testbed_buckets():
    """Few batch buckets (fewer compiled programs) and fine length buckets (small cache footprint)."""
    from lpo_jax.sampling import Buckets

    return Buckets(batch=(32, 128, 512, 2048), length=(16, 32, 48, 64, 96, 128, 192, 256, 512, 1024))


def episode_success(sampler, tok, make_env, examples, samples: int, key, agent_cfg, chunk: int = 256):
    """Per-question success rate [N] over `samples` episodes each (reward >= 1)."""
    from lpo_jax.sampling import run_episodes

    prompts = [e.prompt for e in examples for _ in range(samples)]
    rewards = []
    for start in range(0, len(prompts), chunk):
        _, recs = run_episodes(sampler, tok, make_env, prompts[start:start + chunk], key + start, agent_cfg)
        rewards += [r.reward for r in recs]
    return (np.asarray(rewards).reshape(len(examples), samples) >= 1.0).mean(-1)


def prefix_promise(sampler, tok, make_env, examples, samples: int, key, agent_cfg) -> dict[str, float]:
    """Do mid-episode prefixes differ in promise? One root per question, `samples` continuations from the
    prefix after turn 1: returns the mean absolute gap |V(prefix) - V(question)| and the fraction of
    multi-turn roots whose prefix value (MC) is mixed-extreme-different from the question's mean, plus the
    success of continuations after a matching vs a non-matching first search."""
    from lpo_jax.sampling import branch_episodes, run_episodes

    _, roots = run_episodes(sampler, tok, make_env, [e.prompt for e in examples], key, agent_cfg)
    points = [(i, 1) for i, r in enumerate(roots) if r.num_turns >= 2 for _ in range(samples)]
    if not points:
        return {"prefix_gap": 0.0, "prefix_roots": 0}
    _, conts = branch_episodes(sampler, tok, make_env, roots, points, key + 1, agent_cfg)
    by_root: dict[int, list[float]] = {}
    for (i, _), c in zip(points, conts):
        by_root.setdefault(i, []).append(float(c.reward >= 1.0))
    good, bad = [], []
    for i, vals in by_root.items():
        ex, obs = examples[i], roots[i].observations[0].split()
        ok = len(obs) >= 4 and obs[1] == ex.meta["chain"][0] and obs[3] == ex.meta["chain"][1]
        (good if ok else bad).append(np.mean(vals))
    values = np.array([np.mean(v) for v in by_root.values()])
    return {"prefix_roots": len(by_root), "prefix_value_std": float(values.std()),
            "prefix_success_after_correct_hop1": float(np.mean(good)) if good else float("nan"),
            "prefix_success_after_wrong_hop1": float(np.mean(bad)) if bad else float("nan")}


def evaluate_synthhop_policy(model, tok, cfg: SynthHopPolicyConfig) -> dict[str, Any]:
    """Spread of per-question success on training questions, held-out accuracy, by-hop success, prefixes."""
    from lpo_jax.sampling import Sampler

    kb, train, held = synthhop_world(cfg)
    sampler = Sampler(model, buckets=testbed_buckets())
    make_env = make_env_factory(kb, cfg, seed=cfg.seed + 99)
    agent = agent_config(cfg)
    probe = train[: cfg.spread_prompts]
    s_train = episode_success(sampler, tok, make_env, probe, cfg.spread_samples, cfg.seed + 1, agent)
    s_held = episode_success(sampler, tok, make_env, held, cfg.spread_samples, cfg.seed + 2, agent)
    hops = np.array([e.meta["hops"] for e in probe])
    report = {
        "spread": spread_fraction(s_train), "train_accuracy": float(s_train.mean()),
        "heldout_accuracy": float(s_held.mean()),
        "train_success_by_hops": {int(h): float(s_train[hops == h].mean()) for h in np.unique(hops)},
        "frac_all_correct": float((s_train == 1).mean()), "frac_all_wrong": float((s_train == 0).mean()),
        "spread_prompts": len(probe), "spread_samples": cfg.spread_samples,
    }
    report.update(prefix_promise(sampler, tok, make_env, train[: cfg.prefix_roots], cfg.prefix_samples,
                                 cfg.seed + 3, agent))
    return report


def default_cache_root() -> str:
    return cache_root("synthhop_sft")


def ensure_synthhop_policy(config: SynthHopPolicyConfig | Mapping[str, Any] | None = None, *,
                           seed: int | None = None, cache_dir: str | None = None, force: bool = False,
                           log: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """Path of the cached SFT warm start for `config` (trained and saved first when absent)
    -> (absolute path, trained_now). Load with `lpo_jax.models.load_hf` and `Tokenizer.from_pretrained`."""
    cfg = config_from(SynthHopPolicyConfig, config, seed, "SynthHop policy")
    root = os.path.abspath(os.path.expanduser(cache_dir or default_cache_root()))
    path = os.path.join(root, cfg.cache_key())
    if not force and os.path.isfile(os.path.join(path, REPORT_FILE)):
        return path, False
    start = time.time()
    model, tok, losses = train_synthhop_sft(cfg, log)
    sft_s = time.time() - start
    report = {"config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), "sft_s": sft_s,
              "final_loss": losses[-1], "vocab_size": len(tok),
              "num_params": synthhop_model_config(cfg, len(tok)).num_params()}
    report.update(evaluate_synthhop_policy(model, tok, cfg))
    report["measure_s"] = time.time() - start - sft_s
    write_policy_dir(path, model, tok.save_pretrained, report, force=force)
    return path, True
