"""Outcome-reward advantages and LPO temperatures per group, and `prepare` (once per rollout batch).

Every baseline mode (spec §2 table) is one per-group temperature tau and one batch shift:

    A_k   = (R_k - mu_G - shift) / tau        (policy-gradient advantage)
    phi_k = (R_k - mu_G) / tau                (LPO target logits: w* = softmax(phi) = softmax(R / tau))

| mode         | tau                                              | shift                    |
| grpo         | std_G(R, ddof) + eps  (ddof=1 default, as verl)  | 0                        |
| drgrpo       | 1                                                | 0                        |
| rloo         | (K - 1) / K   (A_k = R_k - mean_{j != k} R_j)    | 0                        |
| maxrl        | max(mu_G, 0) + eps  (needs rewards >= 0)         | 0                        |
| rpp_baseline | batch std of R - mu_G (+ eps), same for all      | batch mean of R - mu_G   |
| constant     | tau0                                             | 0                        |

GRPO std: ddof=1 (unbiased, verl's torch.std; default) or ddof=0 (the paper's binary sqrt(mu(1 - mu))); set
`grpo_std_ddof`. REINFORCE++-baseline whitening: "token" weights each response by its length (verl's
masked_whiten over tokens; default) or "sequence" weights each non-empty response once; both ddof=1.
Group means always use all K rewards (an empty response is still a sampled response).

K = 1: modes grpo/drgrpo/rloo/maxrl need K >= 2 (ValueError). rpp_baseline with K = 1 is plain REINFORCE++
(no group centring, as verl), and LPO uses the virtual simplex {R, b} (spec §5): phi = (R - b)/tau against a
fixed baseline item with logit 0, b = `k1_baseline` or the batch mean reward (the whitening mean for rpp).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from lpo_jax.objectives import aggregation as agg
from lpo_jax.objectives.config import BASELINES, BASELINES_NEEDING_GROUPS, ObjectiveConfig


@flax.struct.dataclass
class Targets:
    """Per-rollout-batch targets; slice along B for mini-batches (groups stay whole).

    advantages_BK:    policy-gradient advantages A.
    target_logits_BK: phi, log w* up to a per-group constant (K = 1: logit against the virtual baseline).
    tau_B:            per-group temperature.
    zero_var_B:       bool, all K rewards equal (always True when K = 1).
    """

    advantages_BK: jax.Array
    target_logits_BK: jax.Array
    tau_B: jax.Array
    zero_var_B: jax.Array

    @property
    def log_w_BK(self) -> jax.Array:
        """log w*: log_softmax(phi) over the group; K = 1: log sigmoid(phi) (weight on the real response)."""
        if self.target_logits_BK.shape[-1] == 1:
            return jax.nn.log_sigmoid(self.target_logits_BK)
        return jax.nn.log_softmax(self.target_logits_BK, axis=-1)


def _weighted_mean_std(x_BK, weight_BK, eps):
    """Weighted mean and ddof=1 std (denominator sum(w) - 1, at least 1) over the batch; std + eps."""
    total = jnp.maximum(weight_BK.sum(), 1e-30)
    mean = (weight_BK * x_BK).sum() / total
    var = (weight_BK * (x_BK - mean) ** 2).sum() / jnp.maximum(total - 1.0, 1.0)
    return mean, jnp.sqrt(var) + eps


def _rpp_stats(rewards_BK, mask_BKT, cfg):
    K = rewards_BK.shape[-1]
    centred = rewards_BK - rewards_BK.mean(-1, keepdims=True) if K > 1 else rewards_BK
    lengths = agg.seq_lengths(mask_BKT).astype(rewards_BK.dtype)
    weight = lengths if cfg.rpp_whiten == "token" else (lengths > 0).astype(rewards_BK.dtype)
    return _weighted_mean_std(centred, weight, cfg.std_eps)


def group_temperature(rewards_BK, mask_BKT, cfg: ObjectiveConfig):
    """(tau_B, shift scalar) of `cfg.baseline` (table in the module docstring)."""
    B, K = rewards_BK.shape
    mode, eps = cfg.baseline, cfg.std_eps
    mu = rewards_BK.mean(-1)
    zero = jnp.zeros((), rewards_BK.dtype)
    if mode == "grpo":
        return jnp.std(rewards_BK, axis=-1, ddof=cfg.grpo_std_ddof) + eps, zero
    if mode == "drgrpo":
        return jnp.ones_like(mu), zero
    if mode == "rloo":
        return jnp.full_like(mu, (K - 1) / K), zero
    if mode == "maxrl":
        return jnp.maximum(mu, 0.0) + eps, zero
    if mode == "rpp_baseline":
        shift, std = _rpp_stats(rewards_BK, mask_BKT, cfg)
        return jnp.full_like(mu, std), shift
    if mode == "constant":
        return jnp.full_like(mu, cfg.tau0), zero
    raise ValueError(f"Unknown baseline {mode!r}; choose one of {BASELINES}.")


def check_prepare_inputs(rewards_BK, mask_BKT, cfg):
    """Ranks, matching [B, K] leading shapes, config type, K >= 2 for group baselines: clear errors."""
    agg.check_rank("rewards_BK", rewards_BK, 2, "B, K")
    agg.check_rank("mask_BKT", mask_BKT, 3, "B, K, T")
    if tuple(mask_BKT.shape[:2]) != tuple(rewards_BK.shape):
        raise ValueError(f"mask_BKT shape {tuple(mask_BKT.shape)} does not start with rewards_BK shape "
                         f"{tuple(rewards_BK.shape)} ([B, K]).")
    if not isinstance(cfg, ObjectiveConfig):
        raise TypeError(f"cfg must be an ObjectiveConfig (see make_config), got {type(cfg).__name__}.")
    if rewards_BK.shape[-1] < 2 and cfg.baseline in BASELINES_NEEDING_GROUPS:
        raise ValueError(f"baseline {cfg.baseline!r} needs K >= 2 responses per prompt, got K = "
                         f"{rewards_BK.shape[-1]}; use baseline 'rpp_baseline' or 'constant' for K = 1.")


def _cast(rewards_BK, mask_BKT):
    dtype = agg.compute_dtype(rewards_BK)
    return jnp.asarray(rewards_BK, dtype), jnp.asarray(mask_BKT).astype(dtype)


def prepare(rewards_BK, mask_BKT, cfg: ObjectiveConfig) -> Targets:
    """Targets of one whole rollout batch (batch statistics such as REINFORCE++ whitening happen here)."""
    check_prepare_inputs(rewards_BK, mask_BKT, cfg)
    rewards_BK, mask_BKT = _cast(rewards_BK, mask_BKT)
    B, K = rewards_BK.shape
    tau_B, shift = group_temperature(rewards_BK, mask_BKT, cfg)
    if K > 1:
        centred = rewards_BK - rewards_BK.mean(-1, keepdims=True)
        phi = centred / tau_B[:, None]
        advantages = (centred - shift) / tau_B[:, None]
    else:
        if cfg.k1_baseline is not None:
            b = jnp.asarray(cfg.k1_baseline, rewards_BK.dtype)
        elif cfg.baseline == "rpp_baseline":
            b = shift
        else:
            valid = (agg.seq_lengths(mask_BKT) > 0).astype(rewards_BK.dtype)
            b = (valid * rewards_BK).sum() / jnp.maximum(valid.sum(), 1.0)
        phi = (rewards_BK - b) / tau_B[:, None]
        advantages = (rewards_BK - shift) / tau_B[:, None] if cfg.baseline == "rpp_baseline" else phi
    zero_var = rewards_BK.max(-1) == rewards_BK.min(-1)
    return Targets(advantages_BK=advantages, target_logits_BK=phi, tau_B=tau_B, zero_var_B=zero_var)


def compute_advantages(rewards_BK, mask_BKT, cfg: ObjectiveConfig) -> jax.Array:
    """Policy-gradient advantages [B, K] of `cfg.baseline`."""
    return prepare(rewards_BK, mask_BKT, cfg).advantages_BK


def _advantage_fn(mode: str) -> Callable:
    def fn(rewards_BK, mask_BKT, cfg: ObjectiveConfig | None = None):
        cfg = dataclasses.replace(cfg or ObjectiveConfig(), baseline=mode)
        return compute_advantages(rewards_BK, mask_BKT, cfg)
    fn.__name__ = f"{mode}_advantages"
    fn.__doc__ = f"Advantages of baseline mode {mode!r}: fn(rewards_BK, mask_BKT, cfg=None) -> A_BK."
    return fn


ADVANTAGE_FNS = {mode: _advantage_fn(mode) for mode in BASELINES}


def get_advantage_fn(name: str) -> Callable:
    """Advantage function by baseline name (grpo, drgrpo, rloo, maxrl, rpp_baseline, constant)."""
    if name not in ADVANTAGE_FNS:
        raise ValueError(f"Unknown advantage {name!r}; choose one of {sorted(ADVANTAGE_FNS)}.")
    return ADVANTAGE_FNS[name]
