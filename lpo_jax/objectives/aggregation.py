"""Masked reductions over [B, K, T] token arrays and input validation shared by all objectives.

Conventions: B prompts (groups), K responses per group, T response tokens; `mask_BKT` is 1 on response
tokens (bool/int/float accepted). A group is *valid* when any of its K responses has a token; invalid groups
(e.g. padding rows of a static-shape batch) contribute nothing and are not counted in means over groups.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(*arrays) -> jnp.dtype:
    """float32 at least (bf16 inputs are upcast), float64 when any input is float64."""
    return jnp.result_type(jnp.float32, *[a.dtype for a in arrays])


def check_rank(name: str, x, rank: int, axes: str) -> None:
    if not hasattr(x, "shape") or x.ndim != rank:
        raise ValueError(f"{name} must be a rank-{rank} array [{axes}], got shape {getattr(x, 'shape', type(x))}.")


def check_same_shape(reference_name: str, reference, **others) -> None:
    for name, x in others.items():
        if x is not None and tuple(x.shape) != tuple(reference.shape):
            raise ValueError(f"{name} has shape {tuple(x.shape)} but {reference_name} has shape "
                             f"{tuple(reference.shape)}; they must match.")


def seq_lengths(mask_BKT: jax.Array) -> jax.Array:
    """Number of valid tokens per response, [B, K] (float)."""
    return mask_BKT.sum(-1)


def valid_groups(mask_BKT: jax.Array) -> jax.Array:
    """[B] float: 1 where the group has at least one valid token."""
    return (mask_BKT.sum((-1, -2)) > 0).astype(mask_BKT.dtype)


def num_valid_groups(mask_BKT: jax.Array) -> jax.Array:
    """Scalar max(#valid groups, 1): the denominator of every mean over prompts."""
    return jnp.maximum(valid_groups(mask_BKT).sum(), 1.0)


def seq_aggregate(x_BKT: jax.Array, mask_BKT: jax.Array, mode: str = "mean") -> jax.Array:
    """Per-response aggregate of token values, [B, K]: masked "mean" (1/|y| sum; empty -> 0) or "sum"."""
    total = (x_BKT * mask_BKT).sum(-1)
    if mode == "sum":
        return total
    if mode == "mean":
        return total / jnp.maximum(mask_BKT.sum(-1), 1.0)
    raise ValueError(f"seq aggregation mode must be 'mean' or 'sum', got {mode!r}.")


def aggregate_loss(loss_BKT: jax.Array, mask_BKT: jax.Array, mode: str,
                   max_response_len: int | None = None) -> jax.Array:
    """verl-style `agg_loss` of a token loss to a scalar.

    token-mean:              sum_{b,k,t} L / sum mask                       (DAPO, CISPO, REINFORCE++)
    seq-mean-token-mean:     sum_{b,k} mean_t L / (K * G)                   (GRPO, GSPO)
    seq-mean-token-sum:      sum_{b,k} sum_t L / (K * G)                    (token-sum PG, Prop. 1 with agg="sum")
    seq-mean-token-sum-norm: sum_{b,k,t} L / (K * G * L_max)                (Dr.GRPO; L_max default T)
    with G = number of valid groups (>= 1).
    """
    K, T = loss_BKT.shape[-2], loss_BKT.shape[-1]
    if mode == "token-mean":
        return (loss_BKT * mask_BKT).sum() / jnp.maximum(mask_BKT.sum(), 1.0)
    denom = K * num_valid_groups(mask_BKT)
    if mode == "seq-mean-token-mean":
        return seq_aggregate(loss_BKT, mask_BKT, "mean").sum() / denom
    if mode == "seq-mean-token-sum":
        return (loss_BKT * mask_BKT).sum() / denom
    if mode == "seq-mean-token-sum-norm":
        return (loss_BKT * mask_BKT).sum() / (denom * float(max_response_len or T))
    raise ValueError(f"Unknown loss_agg {mode!r}.")
