"""From a `TreeRollout` to the trainer's `TrainBatch`: active prompts compacted to static rows, tree
advantages (or LPO leaf-group targets) on tokens, and the token-level policy loss.

Layout: B = static prompt rows (prompts with roots, padded with empty rows), K = L leaf slots, sequences
are whole episodes right-padded to S tokens. The trainer's ``prompt_len`` is 1: log-probs are taken for
tokens[1:], and the loss mask (generated tokens of valid leaves, observations and padding excluded) does
the rest - shared prefix tokens are trained on every leaf that copies them ("soft", Tree-GRPO default).

Targets:
* ``TokenTargets`` (tree_grpo / segment / grpo_flat): per-token advantages [B, K, S-1]
  (`advantages.tree_advantages` then `advantages.token_advantages`); the loss is token PPO-clip
  (`objectives.ppo_clip_token_loss`) aggregated "token-mean" or "seq-mean-token-mean".
* LPO: `objectives.lpo.prepare_masked` on each prompt's leaf group with invalid leaves masked, and the
  shared `objectives.loss` (LPO_fwd by default).
"""
from __future__ import annotations

import collections
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.objectives import aggregation as agg
from lpo_jax.objectives import loss as objective_loss
from lpo_jax.objectives import make_config
from lpo_jax.objectives.lpo import prepare_masked
from lpo_jax.objectives.policy_losses import ppo_clip_token_loss
from lpo_jax.trace.advantages import token_advantages, tree_advantages
from lpo_jax.trace.layout import TreeLeaves
from lpo_jax.training.step import TrainBatch


_prepare_masked = jax.jit(prepare_masked, static_argnums=2)


@flax.struct.dataclass
class TokenTargets:
    adv_BKT: jax.Array


def compact_rows(out, rows: int) -> np.ndarray:
    """Indices of the prompts with a valid leaf, padded with -1 to `rows` (static row count)."""
    active = np.flatnonzero(np.asarray(out.leaves.leaf_valid_PL).any(-1))
    if len(active) > rows:
        raise ValueError(f"{len(active)} active prompts exceed the {rows} static train rows")
    return np.concatenate([active, -np.ones(rows - len(active), np.int64)])


def _take(x, idx):
    x = np.asarray(x)
    out = x[np.maximum(idx, 0)]
    out[idx < 0] = 0
    return out


def sub_leaves(leaves: TreeLeaves, idx) -> TreeLeaves:
    """The rows `idx` of a TreeLeaves (-1: an empty row)."""
    return TreeLeaves(reward_PL=jnp.asarray(_take(leaves.reward_PL, idx), jnp.float32),
                      leaf_valid_PL=jnp.asarray(_take(leaves.leaf_valid_PL, idx), bool),
                      src_root_PL=jnp.asarray(_take(leaves.src_root_PL, idx), jnp.int32),
                      branch_t_PL=jnp.asarray(_take(leaves.branch_t_PL, idx), jnp.int32),
                      n_turns_PL=jnp.maximum(jnp.asarray(_take(leaves.n_turns_PL, idx), jnp.int32), 1),
                      num_roots=leaves.num_roots, max_turns=leaves.max_turns)


def host_arrays(out, idx) -> dict:
    """Token arrays of the chosen rows, numpy [B, L, S]; padded leaves have empty masks."""
    valid = _take(out.leaves.leaf_valid_PL, idx).astype(bool)
    S = out.tokens.shape[-1]
    lengths = _take(out.lengths, idx)
    attn = ((np.arange(S) < lengths[..., None]) & valid[..., None]) | (np.arange(S) == 0)  # no all-masked row
    return {"tokens": _take(out.tokens, idx), "attn": attn,
            "loss_mask": _take(out.loss_mask, idx).astype(bool) & valid[..., None],
            "turn_ids": _take(out.turn_ids, idx), "logprobs": _take(out.logprobs, idx), "valid": valid}


@functools.partial(jax.jit, static_argnames=("method",))
def token_targets(leaves: TreeLeaves, turn_ids_BKS, loss_mask_BKS, *, method: str):
    """(adv_tok [B, K, S], mask [B, K, S]) of a tree advantage method on tokens."""
    adv, weight = tree_advantages(leaves, method)
    return token_advantages(adv, turn_ids_BKS, loss_mask_BKS, weight)


def pad_leaf_slots(leaves: TreeLeaves, arrays: dict, num_slots: int):
    """Pads the leaf axis to `num_slots` with invalid slots (after the continuations), so runs of different
    methods share one train-step shape (one compilation)."""
    B, L = leaves.shape
    if num_slots <= L:
        if num_slots and num_slots < L:
            raise ValueError(f"pad_leaves={num_slots} is smaller than the layout's {L} leaf slots")
        return leaves, arrays
    pad = lambda x: np.concatenate([np.asarray(x), np.zeros((B, num_slots - L, *np.shape(x)[2:]),  # noqa: E731
                                                              np.asarray(x).dtype)], axis=1)
    arrays = {k: pad(v) for k, v in arrays.items()}
    arrays["attn"][..., 0] = True
    leaves = TreeLeaves(reward_PL=jnp.asarray(pad(leaves.reward_PL)), leaf_valid_PL=jnp.asarray(pad(leaves.leaf_valid_PL)),
                        src_root_PL=jnp.asarray(pad(leaves.src_root_PL)), branch_t_PL=jnp.asarray(pad(leaves.branch_t_PL)),
                        n_turns_PL=jnp.maximum(jnp.asarray(pad(leaves.n_turns_PL)), 1), num_roots=leaves.num_roots,
                        max_turns=leaves.max_turns)
    return leaves, arrays


def make_batch(out, rows: int, advantage: str, lpo_cfg=None, num_slots: int = 0):
    """(TrainBatch, metrics dict, sub-leaves, host arrays, row indices) for one tree rollout (module
    docstring); `num_slots` > L pads the leaf axis (`pad_leaf_slots`)."""
    idx = compact_rows(out, rows)
    leaves, a = pad_leaf_slots(sub_leaves(out.leaves, idx), host_arrays(out, idx), num_slots)
    if advantage == "lpo":
        mask_tok = jnp.asarray(a["loss_mask"] & (a["turn_ids"] >= 1))
        targets = _prepare_masked(leaves.reward_PL, mask_tok[..., 1:].astype(jnp.float32), lpo_cfg,
                                  leaves.leaf_valid_PL)
        live = (~targets.zero_var_B)[:, None, None] & leaves.leaf_valid_PL[..., None]
        nonzero = float(((mask_tok & live).sum()) / jnp.maximum(mask_tok.sum(), 1))
    else:
        adv_tok, mask_tok = token_targets(leaves, jnp.asarray(a["turn_ids"]), jnp.asarray(a["loss_mask"]),
                                          method=advantage)
        targets = TokenTargets(adv_tok[..., 1:])
        nonzero = float((mask_tok & (jnp.abs(adv_tok) > 1e-8)).sum() / jnp.maximum(mask_tok.sum(), 1))
    batch = TrainBatch(tokens_BKL=jnp.asarray(a["tokens"]), attn_mask_BKL=jnp.asarray(a["attn"], jnp.int32),
                       loss_mask_BKT=jnp.asarray(mask_tok[..., 1:], jnp.float32),
                       old_logp_BKT=jnp.asarray(a["logprobs"][..., 1:], jnp.float32), ref_logp_BKT=None,
                       targets=targets)
    return batch, {"nonzero_adv_frac": nonzero}, leaves, a, idx


def make_loss_fn(advantage: str, *, clip_eps: float, loss_agg: str, lpo_divergence: str = "fwd",
                 counter: collections.Counter | None = None):
    """loss_fn for `training.step.make_train_step` (+ the LPO ObjectiveConfig, or None)."""
    if advantage == "lpo":
        cfg = make_config(f"lpo_{lpo_divergence}", loss_agg=loss_agg, clip_eps_low=clip_eps, clip_eps_high=clip_eps)

        def lpo_loss(logp, old, mask, targets, ref_logp_BKT=None, entropy_BKT=None):
            if counter is not None:
                counter["train_step"] += 1
            return objective_loss(logp, old, mask, targets, cfg, ref_logp_BKT=ref_logp_BKT, entropy_BKT=entropy_BKT)

        return lpo_loss, cfg

    def pg_loss(logp, old, mask, targets, ref_logp_BKT=None, entropy_BKT=None):
        if counter is not None:
            counter["train_step"] += 1
        delta = jnp.where(mask > 0, logp - jax.lax.stop_gradient(old), 0.0)
        tok, zeroed = ppo_clip_token_loss(delta, targets.adv_BKT, clip_eps, clip_eps)
        value = agg.aggregate_loss(tok, mask, loss_agg)
        n = jnp.maximum(mask.sum(), 1.0)
        metrics = {"clip_frac": jax.lax.stop_gradient((zeroed * mask).sum() / n),
                   "adv_abs_mean": jax.lax.stop_gradient((jnp.abs(targets.adv_BKT) * mask).sum() / n)}
        if entropy_BKT is not None:
            metrics["entropy"] = jax.lax.stop_gradient((entropy_BKT * mask).sum() / n)
        return value, metrics

    return pg_loss, None
