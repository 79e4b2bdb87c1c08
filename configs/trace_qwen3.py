"""TRACE at real scale (template): Qwen3 from a local HF directory, search over a local jsonl corpus (BM25),
HotpotQA-style train / eval files (spec §1.7: 512 roots + 2 continuations; M = 16 roots per prompt max).

    python -m lpo_jax.trace.run configs/trace_qwen3.py:trace \
        --set local.model_path=/ckpt/Qwen3-8B --set local.corpus_path=/data/wiki18.jsonl \
        --set local.train_path=/data/hotpotqa_train.jsonl --set local.eval_path=/data/hotpotqa_dev.jsonl
Needs local files (no downloads). Flat GRPO gets more roots (flat_roots) at about equal generated tokens.
"""
import ml_collections

from lpo_jax.trace.train_config import METHODS


def get_config(method: str = "trace"):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c = ml_collections.ConfigDict()
    c.run_name = f"trace_qwen3_{method}"
    c.output_dir = "runs"
    c.compilation_cache = "~/.cache/lpo_jax/xla"
    c.source = "local"
    c.local = ml_collections.ConfigDict(dict(
        model_path="/path/to/Qwen3-8B", corpus_path="/path/to/wiki-18.jsonl",
        train_path="/path/to/hotpotqa_train.jsonl", eval_path="/path/to/hotpotqa_dev.jsonl",
        top_k=3, max_turns=4, max_new_tokens=500, max_len=8192, max_obs_tokens=500, n_train=0, n_eval=500,
        dtype="bfloat16"))
    c.train = ml_collections.ConfigDict(dict(
        method=method, advantage="tree_grpo", steps=180, token_budget=0, seed=0,
        pool_prompts=1024, roots_per_prompt=16, root_budget=512, multiplier=2, tree_group=2,
        root_objective="groups",   # the spec's stage 1; "trajectories" (ours) won on the testbed (trace_mhqa.py)
        flat_group=4, flat_roots=1024, lr=1e-6, clip_eps=0.2, loss_agg="token-mean",
        predictor_hidden=256, predictor_lr=1e-3, predictor_updates=8, predictor_batch=1024,
        predictor_buffer=65536, predictor_warm=5, eval_every=20, eval_samples=1, mini_batches=1))
    c.lock()
    return c
