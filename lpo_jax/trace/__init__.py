"""lpo_jax.trace: TRACE tree-rollout allocation, tree targets/advantages and the shared success predictor.

One step (host driver, static shapes; spec §2.1):
  m = allocate_roots(Ṽψ(prompts), B_root, M)        -> roots per prompt (spec objective; or
      allocate_roots_dp(..., unit=2, objective="trajectories"): roots in mixed groups, ours)
  roll out roots; Vp = Ṽψ(prefixes); K = allocate_prefixes(prefix_gains(Vp, r, cand, Kmax), m, N)
  src, t, valid = continuation_slots(K, C)          -> continuations copy turns 1..t of root src
  leaves = make_tree_leaves(...); nv = node_values(leaves)
  adv, w = tree_advantages(leaves, "tree_grpo" | "segment" | "grpo_flat"); token_advantages(...)
  predictor_step(cfg, state, features, targets...)  -> Ṽψ for the next step
With an LM policy and a resumable env, `rollout_tree` runs steps 2-4 on the agent loop.

RL loop (train.py): `TraceTrainer(model, tokenizer, make_env, train_prompts, heldout_prompts, agent_cfg)
.run(trace_train_config(method="trace" | "tree_random" | "grpo_flat", ...))`; SynthHop testbed:
`testbed.synthhop_trainer()`; config files: `run.run_config` (configs/trace_*.py).
"""
from lpo_jax.trace.advantages import (LeafGroups, grpo_flat, leaf_groups, leaf_to_turns, scatter_to_leaves,
                                      segment, token_advantages, tree_advantages, tree_grpo, tree_membership)
from lpo_jax.trace.allocation import (allocate_prefixes, allocate_prefixes_random, allocate_roots,
                                      allocate_roots_dp, allocate_roots_uniform, continuation_slots,
                                      prefix_candidates, prefix_gains, prefix_value, root_gains, root_objective,
                                      root_value)
from lpo_jax.trace.bandit_tree import (BanditTree, bandit_tree_rollout, make_bandit_tree, path_features,
                                       prefix_values, prompt_values, sample_paths)
from lpo_jax.trace.layout import TreeLeaves, make_tree_leaves
from lpo_jax.trace.metrics import (effective_contrast_ratio, mixed_subtree_rate, nonzero_advantage_fraction,
                                   tree_cost)
from lpo_jax.trace.predictor import (PredictorConfig, PredictorState, features, predict, predict_members,
                                     predict_raw, predictor_init, predictor_step, push, train, weighted_mse)
from lpo_jax.trace.targets import (NodeValues, PredictorTargets, node_valid, node_values, path_values,
                                   predictor_targets, subtree_mask)
from lpo_jax.trace.tree import TreeConfig, TreeRollout, rollout_tree
from lpo_jax.trace.batch import TokenTargets, make_batch, make_loss_fn, pad_leaf_slots
from lpo_jax.trace.features import make_prefix_hidden, prefix_features, record_arrays
from lpo_jax.trace.train import RunOutput, TraceTrainer
from lpo_jax.trace.train_config import TraceTrainConfig, trace_train_config

__all__ = [
    "LeafGroups", "grpo_flat", "leaf_groups", "leaf_to_turns", "scatter_to_leaves", "segment",
    "token_advantages", "tree_advantages", "tree_grpo", "tree_membership",
    "allocate_prefixes", "allocate_prefixes_random", "allocate_roots", "allocate_roots_dp",
    "allocate_roots_uniform", "continuation_slots", "prefix_candidates", "prefix_gains", "prefix_value",
    "root_gains", "root_objective", "root_value",
    "BanditTree", "bandit_tree_rollout", "make_bandit_tree", "path_features", "prefix_values", "prompt_values",
    "sample_paths",
    "TreeLeaves", "make_tree_leaves",
    "effective_contrast_ratio", "mixed_subtree_rate", "nonzero_advantage_fraction", "tree_cost",
    "PredictorConfig", "PredictorState", "features", "predict", "predict_members", "predict_raw", "predictor_init",
    "predictor_step", "push", "train", "weighted_mse",
    "NodeValues", "PredictorTargets", "node_valid", "node_values", "path_values", "predictor_targets",
    "subtree_mask",
    "TreeConfig", "TreeRollout", "rollout_tree",
    "TokenTargets", "make_batch", "make_loss_fn", "pad_leaf_slots",
    "make_prefix_hidden", "prefix_features", "record_arrays",
    "RunOutput", "TraceTrainer", "TraceTrainConfig", "trace_train_config",
]
