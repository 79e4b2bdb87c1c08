"""TRACE logging metrics (spec §1.6) and equal-cost counters, all jittable.

* effective contrast ratio: among prompts with >= 1 valid leaf, the fraction whose valid rewards are not
  all equal (binary rewards: a success and a failure);
* mixed-subtree rate: among expanded nodes (K > 0), the fraction whose subtree rewards are mixed;
* nonzero-advantage token fraction: tokens on the loss mask with |A| > tol;
* cost: trajectories (valid leaves), generated turns (n_turns - branch_t; continuations do not pay for
  copied turns), and optionally generated tokens / tool calls per leaf as logged by the rollout.
"""
from __future__ import annotations

import jax.numpy as jnp

from lpo_jax.trace.layout import TreeLeaves
from lpo_jax.trace.targets import subtree_mask


def _mixed(rewards, mask, axis=-1):
    hi = jnp.where(mask, rewards, -jnp.inf).max(axis)
    lo = jnp.where(mask, rewards, jnp.inf).min(axis)
    return mask.any(axis) & (hi > lo)


def effective_contrast_ratio(leaves: TreeLeaves):
    """Fraction of active prompts with mixed rewards (0 when no prompt is active)."""
    active = leaves.leaf_valid_PL.any(-1)
    mixed = _mixed(leaves.reward_PL, leaves.leaf_valid_PL)
    return mixed.sum() / jnp.maximum(active.sum(), 1)


def mixed_subtree_rate(leaves: TreeLeaves, K_PMT):
    """Fraction of expanded nodes (K > 0) whose subtree holds mixed rewards (0 when none expanded)."""
    mask = subtree_mask(leaves)
    mixed = _mixed(leaves.reward_PL[:, None, None, :], mask)
    expanded = jnp.asarray(K_PMT) > 0
    return (mixed & expanded).sum() / jnp.maximum(expanded.sum(), 1)


def nonzero_advantage_fraction(adv_tok, loss_mask, tol: float = 1e-8):
    """Fraction of loss-mask tokens whose advantage is nonzero."""
    mask = jnp.asarray(loss_mask, bool)
    return (mask & (jnp.abs(adv_tok) > tol)).sum() / jnp.maximum(mask.sum(), 1)


def tree_cost(leaves: TreeLeaves, gen_tokens_PL=None, tool_calls_PL=None):
    """Equal-cost counters: {'trajectories', 'generated_turns'[, 'generated_tokens', 'tool_calls']}."""
    valid = leaves.leaf_valid_PL
    out = {"trajectories": valid.sum(),
           "generated_turns": jnp.where(valid, leaves.n_turns_PL - leaves.branch_t_PL, 0).sum()}
    if gen_tokens_PL is not None:
        out["generated_tokens"] = jnp.where(valid, gen_tokens_PL, 0).sum()
    if tool_calls_PL is not None:
        out["tool_calls"] = jnp.where(valid, tool_calls_PL, 0).sum()
    return out
