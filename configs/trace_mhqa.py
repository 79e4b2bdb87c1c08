"""TRACE on the SynthHop testbed (CPU): the cached SFT policy, trees on the agent loop, the shared predictor.

    python -m lpo_jax.trace.run configs/trace_mhqa.py:trace          # or :tree_random / :grpo_flat
    python -m lpo_jax.trace.run configs/trace_mhqa.py:trace --set train.token_budget=12000
Methods share budgets: trees spend root_budget roots + multiplier continuations per root; flat GRPO spends
flat_roots roots in groups of flat_group (about the same generated tokens per step); every run stops at
train.token_budget generated tokens (experiments/compare_trace.py runs all three over seeds).
Our settings (experiments/compare_trace.py measures them): stage 1 maximises the expected number of roots in
mixed groups (root_objective="trajectories"; the spec's "groups" spreads pairs over many prompts and mixes
only ~1.2x as often as flat GRPO here); 32 predictor updates per RL step, so that the predictor separates
easy from hard questions within the budget; 3 continuations per root (2 mixed less often, 4 mixed more but
cost held-out accuracy). A predictor ensemble (predictor_ensemble > 1) made no measurable difference here.
"""
import ml_collections

from lpo_jax.trace.train_config import METHODS


def get_config(method: str = "trace"):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c = ml_collections.ConfigDict()
    c.run_name = f"trace_mhqa_{method}"
    c.output_dir = "runs"
    c.compilation_cache = "~/.cache/lpo_jax/xla"
    c.source = "synthhop"
    c.policy = ml_collections.ConfigDict({"seed": 0})    # SynthHopPolicyConfig overrides (cache key)
    c.train = ml_collections.ConfigDict(dict(
        method=method, advantage="tree_grpo", steps=200, token_budget=6000, seed=0,
        pool_prompts=16, roots_per_prompt=4, root_budget=16, multiplier=3, tree_group=2,
        root_objective="trajectories", flat_group=4, flat_roots=32, lr=5e-4, clip_eps=0.2, loss_agg="token-mean",
        predictor_hidden=64, predictor_lr=3e-3, predictor_updates=32, predictor_warm=2,
        predictor_target="direct", predictor_prompt_share=0.5,
        eval_every=10, eval_samples=4))
    c.lock()
    return c
