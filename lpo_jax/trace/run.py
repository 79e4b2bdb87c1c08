"""Run a TRACE config file (configs/trace_*.py): build the trainer for its source, run, write metrics.

    python -m lpo_jax.trace.run configs/trace_mhqa.py:trace [--set train.steps=50 --set train.lr=3e-4]

Config schema (ml_collections ConfigDict, validated before any compute; unknown keys -> ValueError):
  run_name, output_dir, compilation_cache
  source: "synthhop" (the CPU testbed, `policy` = SynthHopPolicyConfig fields, optional)
          | "local" (a local HF checkpoint + jsonl corpus with BM25 + HotpotQA-style files: `local.*`)
  train: TraceTrainConfig fields (method, advantage, budgets, lr, predictor, eval)
  local: model_path, corpus_path, train_path, eval_path, top_k, max_turns, max_new_tokens, max_len,
         max_obs_tokens, n_train, n_eval, dtype
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import ml_collections

from lpo_jax.trace.train_config import trace_train_config

TOP_KEYS = {"run_name", "output_dir", "compilation_cache", "source", "train", "policy", "local"}
LOCAL_KEYS = {"model_path", "corpus_path", "train_path", "eval_path", "top_k", "max_turns", "max_new_tokens",
              "max_len", "max_obs_tokens", "n_train", "n_eval", "dtype"}


def validate(cfg: ml_collections.ConfigDict):
    """(train config, source) after checking every key; raises ValueError naming the bad key."""
    unknown = set(cfg.keys()) - TOP_KEYS
    if unknown:
        raise ValueError(f"unknown TRACE config key(s) {sorted(unknown)}; valid: {sorted(TOP_KEYS)}")
    if cfg.source not in ("synthhop", "local"):
        raise ValueError(f"config.source must be 'synthhop' or 'local', got {cfg.source!r}")
    train = trace_train_config(cfg.train)
    if cfg.source == "local":
        bad = set(cfg.local.keys()) ^ LOCAL_KEYS
        if bad:
            raise ValueError(f"config.local must hold exactly {sorted(LOCAL_KEYS)}; mismatched: {sorted(bad)}")
        for key in ("model_path", "corpus_path", "train_path"):
            if not os.path.exists(os.path.expanduser(cfg.local[key])):
                raise ValueError(f"config.local.{key}={cfg.local[key]!r} does not exist (local files are required)")
    if "policy" in cfg:
        from lpo_jax.tasks.synthhop_policy import _as_config
        _as_config(cfg.policy.to_dict(), None)
    return train, cfg.source


def local_trainer(local: ml_collections.ConfigDict):
    """TraceTrainer over a local HF checkpoint, a BM25 index over a jsonl corpus and HotpotQA-style files."""
    from lpo_jax.models import Tokenizer, load_hf
    from lpo_jax.sampling import AgentConfig, SamplingConfig
    from lpo_jax.tasks.retrieval import BM25Index, load_corpus, load_qa_dataset, make_corpus_env
    from lpo_jax.trace.train import TraceTrainer

    tok = Tokenizer.from_pretrained(local.model_path)
    model = load_hf(local.model_path, dtype=local.dtype)
    index = BM25Index(load_corpus(local.corpus_path))
    train = load_qa_dataset(local.train_path, limit=local.n_train or None)
    held = load_qa_dataset(local.eval_path or local.train_path, limit=local.n_eval or None, uid_offset=len(train))
    examples = train + held

    def make_env(seed):
        counter = iter(range(10**12))
        return lambda: make_corpus_env(index, top_k=local.top_k, max_turns=local.max_turns,
                                       seed=seed * 1_000_003 + next(counter), examples=examples)

    scfg = SamplingConfig(max_new_tokens=local.max_new_tokens, temperature=1.0, eos_ids=tok.stop_ids(),
                          pad_id=tok.pad_id)
    agent = AgentConfig(sampling=scfg, max_turns=local.max_turns, max_len=local.max_len,
                        max_obs_tokens=local.max_obs_tokens)
    return TraceTrainer(model, tok, make_env, [e.prompt for e in train], [e.prompt for e in held], agent)


def run_config(cfg: ml_collections.ConfigDict, log=print) -> dict:
    """Validate, build, run; writes history.jsonl and summary.json under output_dir/run_name."""
    train, source = validate(cfg)
    if cfg.compilation_cache:
        import jax
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cfg.compilation_cache))
    if source == "synthhop":
        from lpo_jax.tasks.synthhop_policy import _as_config
        from lpo_jax.trace.testbed import synthhop_trainer
        policy = _as_config(cfg.policy.to_dict() if "policy" in cfg else None, None)
        trainer = synthhop_trainer(policy, log=log)
    else:
        trainer = local_trainer(cfg.local)
    out = trainer.run(train, log=log)
    run_dir = os.path.join(os.path.expanduser(cfg.output_dir), cfg.run_name)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "history.jsonl"), "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in out.history)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({**out.summary, "evals": out.evals, "config": dataclasses.asdict(train)}, f, indent=1)
    return out.summary


def _load(spec: str) -> ml_collections.ConfigDict:
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("trace_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit(__doc__)
    cfg = _load(argv[0])
    rest = argv[1:]
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag != "--set" or "=" not in value:
            raise SystemExit(f"expected --set key.path=value, got {flag} {value}")
        key, raw = value.split("=", 1)
        node, *path = key.split(".")
        target = cfg
        for part in [node, *path][:-1]:
            target = target[part]
        old = target[[node, *path][-1]]
        target[[node, *path][-1]] = type(old)(raw) if not isinstance(old, bool) else raw.lower() in ("1", "true")
    print(json.dumps(run_config(cfg)))


if __name__ == "__main__":
    main()
