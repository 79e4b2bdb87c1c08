"""The run configuration: one ml_collections ConfigDict schema, validated before any compute.

Every experiment file in configs/ starts from ``base_config()`` and overrides fields; the command line overrides
further (``--config.optim.lr=1e-5``). ``validate`` rejects unknown keys (anything not in the schema) and bad
values with a message naming the key, the value and what is allowed.
"""
from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

SELECTORS = ("uniform", "ds", "mopps", "dps", "gps")


class ConfigError(ValueError):
    """A configuration key or value is invalid; raised before any compute."""


def base_config() -> ml_collections.ConfigDict:
    """The full schema with defaults (the CPU testbed with LPO-fwd + DPS)."""
    c = ml_collections.ConfigDict()
    c.run_name = "default"
    c.output_dir = "runs"             # metrics, curves, checkpoints under output_dir/run_name
    c.seed = 0
    c.max_minutes = 0.0               # wall-time cap for the RL run; 0 = none
    c.steps = 60                      # RL steps (rollout batches)

    c.model = ml_collections.ConfigDict()
    c.model.source = "testbed"        # "testbed" (SFT warm start, cached) | "hf" (local HF directory)
    c.model.path = ""                 # HF model directory when source == "hf"
    c.model.dtype = "float32"         # compute dtype
    c.model.param_dtype = "float32"   # master params

    c.task = ml_collections.ConfigDict()
    c.task.name = "testbed"           # "testbed" | "countdown" | "math" | "jsonl"
    c.task.train_path = ""
    c.task.eval_path = ""
    c.task.prompt_field = ""           # "" = the task's default column (math: problem / solution)
    c.task.answer_field = ""
    c.task.max_prompt_len = 64
    c.task.prompt_overflow = "error"  # "error" | "truncate"
    c.task.num_train = 0              # 0 = task default
    c.task.num_eval = 0

    c.rollout = ml_collections.ConfigDict()
    c.rollout.batch_prompts = 32      # B prompts per RL step
    c.rollout.group_size = 8          # K samples per prompt
    c.rollout.max_new_tokens = 16
    c.rollout.temperature = 1.0
    c.rollout.top_k = 0               # 0 = off
    c.rollout.top_p = 1.0
    c.rollout.old_logprobs = "trainer"  # "trainer" (recompute) | "sampler"

    c.objective = ml_collections.ConfigDict()
    c.objective.name = "lpo_fwd"      # any lpo_jax.objectives preset (grpo, dapo, lpo_fwd, lpo_rev, ...)
    # Unset (None) fields keep the preset's value; see lpo_jax.objectives.ObjectiveConfig for their meaning.
    c.objective.baseline = placeholder(str)          # grpo | drgrpo | rloo | maxrl | rpp_baseline | constant
    c.objective.tau0 = placeholder(float)
    c.objective.loss_agg = placeholder(str)
    c.objective.clip_eps_low = placeholder(float)
    c.objective.clip_eps_high = placeholder(float)
    c.objective.seq_logprob_agg = placeholder(str)
    c.objective.lpo_clip = placeholder(str)
    c.objective.kl_coef = placeholder(float)
    c.objective.kl_estimator = placeholder(str)
    c.objective.entropy_coef = placeholder(float)

    c.selector = ml_collections.ConfigDict()
    c.selector.name = "dps"
    c.selector.decay = 0.5            # DPS / MoPPS (and GPS memory) forgetting lambda
    c.selector.max_gen_rounds = 4     # DAPO dynamic sampling
    c.selector.embedder = "wordllama"  # GPS prompt embeddings: "wordllama" | "hashing"
    c.selector.gps_memory = False     # GPS + per-prompt memory [ours]: GPS prediction as prior, own counts update it

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"     # "constant" | "cosine"
    c.optim.grad_clip = 1.0

    c.train = ml_collections.ConfigDict()
    c.train.mini_batches = 2          # updates per rollout batch (whole groups per mini-batch)
    c.train.micro_batches = 1         # gradient accumulation steps per mini-batch
    c.train.max_nonfinite = 3         # consecutive skipped (non-finite) updates before stopping
    c.train.logits_chunk = 0          # >0: completion logits this many positions at a time (big vocabularies)

    c.compilation_cache = "~/.cache/lpo_jax/xla"  # persistent XLA cache: relaunches skip compiles; "" = off
    c.distributed = False             # multi-host: call jax.distributed.initialize() first (same script per host)
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1                  # -1 = all remaining devices
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 20
    c.checkpoint.keep = 2
    c.checkpoint.resume = True
    c.checkpoint.export_hf = True

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 10
    c.eval.num_samples = 4            # k for avg@k / pass@k
    c.eval.temperature = 0.6

    c.log = ml_collections.ConfigDict()
    c.log.progress = True
    c.log.tensorboard = True
    c.log.wandb = False
    return c


_CHOICES = {
    "model.source": ("testbed", "hf"),
    "model.dtype": ("float32", "bfloat16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "task.name": ("testbed", "countdown", "math", "jsonl"),
    "task.prompt_overflow": ("error", "truncate"),
    "rollout.old_logprobs": ("trainer", "sampler"),
    "selector.name": SELECTORS,
    "selector.embedder": ("wordllama", "hashing"),
    "optim.schedule": ("constant", "cosine"),
}
_POSITIVE = ("steps", "rollout.batch_prompts", "rollout.group_size", "rollout.max_new_tokens",
             "task.max_prompt_len", "train.mini_batches", "train.micro_batches", "checkpoint.keep",
             "eval.num_samples", "optim.lr", "selector.max_gen_rounds")
_NONNEGATIVE = ("max_minutes", "rollout.temperature", "rollout.top_k", "optim.weight_decay", "optim.warmup_steps", "optim.grad_clip",
                "checkpoint.every", "eval.every", "train.max_nonfinite", "eval.temperature", "train.logits_chunk")


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _flat_keys(cfg, prefix=""):
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from _flat_keys(value, name + ".")
        else:
            yield name


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks ``cfg`` against ``base_config()``; returns it unchanged or raises ConfigError."""
    schema = set(_flat_keys(base_config()))
    unknown = sorted(set(_flat_keys(cfg)) - schema)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}. Valid keys are listed in "
                          "lpo_jax/training/config.py:base_config (check the spelling).")
    missing = sorted(schema - set(_flat_keys(cfg)))
    if missing:
        raise ConfigError(f"config is missing key(s) {', '.join(missing)}; start experiment configs from "
                          "lpo_jax.training.config.base_config()")
    for key, allowed in _CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"config.{key}={_get(cfg, key)!r} is not one of {allowed}")
    for key in _POSITIVE:
        if not _get(cfg, key) > 0:
            raise ConfigError(f"config.{key}={_get(cfg, key)!r} must be > 0")
    for key in _NONNEGATIVE:
        if not _get(cfg, key) >= 0:
            raise ConfigError(f"config.{key}={_get(cfg, key)!r} must be >= 0")
    if not 0.0 < cfg.rollout.top_p <= 1.0:
        raise ConfigError(f"config.rollout.top_p={cfg.rollout.top_p!r} must be in (0, 1]")
    if cfg.rollout.batch_prompts % cfg.train.mini_batches:
        raise ConfigError(
            f"config.rollout.batch_prompts={cfg.rollout.batch_prompts} must be divisible by "
            f"config.train.mini_batches={cfg.train.mini_batches} (mini-batches keep whole groups)")
    if (cfg.rollout.batch_prompts // cfg.train.mini_batches) % cfg.train.micro_batches:
        raise ConfigError("prompts per mini-batch (rollout.batch_prompts / train.mini_batches) must be divisible "
                          f"by config.train.micro_batches={cfg.train.micro_batches}")
    if cfg.model.source == "hf" and not cfg.model.path:
        raise ConfigError("config.model.source='hf' needs config.model.path: a local Hugging Face model directory")
    if cfg.task.name == "jsonl" and not cfg.task.train_path:
        raise ConfigError("config.task.name='jsonl' needs config.task.train_path (a .jsonl or .parquet file)")
    objective_from_config(cfg)
    return cfg


def objective_overrides(cfg: ml_collections.ConfigDict) -> dict:
    """The objective fields the config sets (None = keep the preset's value)."""
    return {k: v for k, v in cfg.objective.items() if k != "name" and v is not None}


def objective_from_config(cfg: ml_collections.ConfigDict):
    """The lpo_jax.objectives Objective named by cfg.objective, or ConfigError naming the bad field."""
    from lpo_jax import objectives  # lazy: the registry
    try:
        return objectives.get_objective(cfg.objective.name, **objective_overrides(cfg))
    except (KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"config.objective: {err}") from None


def check_overrides(argv: list[str]) -> None:
    """Rejects command-line ``--config.a.b=v`` overrides whose key is not in the schema (before absl parses)."""
    schema = set(_flat_keys(base_config()))
    for arg in argv:
        if arg.startswith("--config."):
            key = arg[len("--config."):].split("=", 1)[0]
            if key not in schema:
                close = sorted(k for k in schema if k.split(".")[-1] == key.split(".")[-1])
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"unknown config key {key!r} in {arg!r}.{hint} Valid keys are listed in "
                                  "lpo_jax/training/config.py:base_config.")
