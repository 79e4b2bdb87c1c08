"""`loss`: the one per-mini-batch entry point shared by every objective, plus its diagnostics."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lpo_jax.objectives import aggregation as agg
from lpo_jax.objectives.advantages import Targets
from lpo_jax.objectives.config import ObjectiveConfig
from lpo_jax.objectives.lpo import lpo_divergence, lpo_policy_loss
from lpo_jax.objectives.policy_losses import kl_to_reference, pg_policy_loss


def _validate(logp_BKT, old_logp_BKT, mask_BKT, targets, cfg, ref_logp_BKT, entropy_BKT):
    if not isinstance(cfg, ObjectiveConfig):
        raise TypeError(f"cfg must be an ObjectiveConfig (see make_config), got {type(cfg).__name__}.")
    if not isinstance(targets, Targets):
        raise TypeError(f"targets must be the Targets returned by prepare(), got {type(targets).__name__}.")
    agg.check_rank("logp_BKT", logp_BKT, 3, "B, K, T")
    agg.check_same_shape("logp_BKT", logp_BKT, old_logp_BKT=old_logp_BKT, mask_BKT=mask_BKT,
                         ref_logp_BKT=ref_logp_BKT, entropy_BKT=entropy_BKT)
    B, K = logp_BKT.shape[:2]
    for name in ("advantages_BK", "target_logits_BK"):
        shape = tuple(getattr(targets, name).shape)
        if shape != (B, K):
            raise ValueError(f"targets.{name} has shape {shape} but logp_BKT is [B, K, T] = "
                             f"{tuple(logp_BKT.shape)}; slice targets with the same groups as the mini-batch.")
    if cfg.kl_coef > 0 and ref_logp_BKT is None:
        raise ValueError(f"kl_coef={cfg.kl_coef} > 0 needs ref_logp_BKT (reference-policy token log-probs).")
    if cfg.entropy_coef > 0 and entropy_BKT is None:
        raise ValueError(f"entropy_coef={cfg.entropy_coef} > 0 needs entropy_BKT (per-token policy entropy).")


def _diagnostics(s_BK, delta_BKT, mask_BKT, targets, c_BK, zeroed_BKT, cfg):
    """Scalar metrics; every input is stop-gradient'ed."""
    sg = jax.lax.stop_gradient
    s_BK, delta_BKT, c_BK = sg(s_BK), sg(delta_BKT), sg(c_BK)
    valid_B = agg.valid_groups(mask_BKT)
    n_groups = agg.num_valid_groups(mask_BKT)
    K = mask_BKT.shape[1]
    n_tokens = jnp.maximum(mask_BKT.sum(), 1.0)
    group_mean = lambda x_B: (valid_B * x_B).sum() / n_groups  # noqa: E731
    kl_old = jnp.exp(-jnp.clip(delta_BKT, -cfg.log_ratio_clamp, cfg.log_ratio_clamp)) + delta_BKT - 1.0
    return {
        "kl_target_policy": group_mean(lpo_divergence(s_BK, targets.target_logits_BK, "fwd")),
        "sum_abs_c": group_mean(jnp.abs(c_BK).sum(-1)),
        "clip_frac": (zeroed_BKT * mask_BKT).sum() / n_tokens,
        "zero_var_frac": group_mean(targets.zero_var_B.astype(s_BK.dtype)),
        "adv_abs_mean": group_mean(jnp.abs(targets.advantages_BK).mean(-1)),
        "response_len": group_mean(agg.seq_lengths(mask_BKT).mean(-1)),
        "approx_kl_old": (kl_old * mask_BKT).sum() / n_tokens,
        "tau_mean": group_mean(targets.tau_B),
    }


def loss(logp_BKT, old_logp_BKT, mask_BKT, targets: Targets, cfg: ObjectiveConfig, *,
         ref_logp_BKT=None, entropy_BKT=None):
    """(scalar loss to minimise, metrics dict) of objective `cfg` on one mini-batch of whole groups.

    Differentiable w.r.t. logp_BKT (old/ref log-probs and targets are constants). Metrics: loss,
    policy_loss, kl_target_policy = KL(w*||P_theta), sum_abs_c, clip_frac (tokens whose gradient clipping
    zeroed; CISPO: whose weight was clipped), zero_var_frac, adv_abs_mean, response_len, approx_kl_old
    (k3 of pi_old vs pi), tau_mean, plus kl_ref when ref_logp_BKT is given and entropy when entropy_BKT is.
    """
    _validate(logp_BKT, old_logp_BKT, mask_BKT, targets, cfg, ref_logp_BKT, entropy_BKT)
    dtype = agg.compute_dtype(logp_BKT, old_logp_BKT)
    mask = jnp.asarray(mask_BKT).astype(dtype)
    logp = logp_BKT.astype(dtype)
    delta = jnp.where(mask > 0, logp - jax.lax.stop_gradient(old_logp_BKT.astype(dtype)), 0.0)
    targets = jax.tree.map(jax.lax.stop_gradient, targets)
    if cfg.policy_loss == "lpo":
        policy_loss, c_BK, zeroed, s_BK = lpo_policy_loss(delta, mask, targets, cfg)
    else:
        policy_loss, c_BK, zeroed, s_BK = pg_policy_loss(delta, mask, targets, cfg)
        s_BK = agg.seq_aggregate(delta, mask, cfg.seq_logprob_agg)
    total = policy_loss
    metrics = _diagnostics(s_BK, delta, mask, targets, c_BK, zeroed, cfg)
    if ref_logp_BKT is not None:
        ref = jax.lax.stop_gradient(ref_logp_BKT.astype(dtype))
        log_ratio = jnp.where(mask > 0, logp - ref, 0.0)  # mask *before* exp: padding may hold -inf/NaN
        kl_tok = kl_to_reference(log_ratio, jnp.zeros_like(log_ratio), cfg.kl_estimator)
        kl_ref = agg.aggregate_loss(kl_tok, mask, cfg.loss_agg, cfg.max_response_len)
        metrics["kl_ref"] = jax.lax.stop_gradient(kl_ref)
        if cfg.kl_coef > 0:
            total = total + cfg.kl_coef * kl_ref
    if entropy_BKT is not None:
        ent = jnp.where(mask > 0, entropy_BKT.astype(dtype), 0.0)
        metrics["entropy"] = jax.lax.stop_gradient((ent * mask).sum() / jnp.maximum(mask.sum(), 1.0))
        if cfg.entropy_coef > 0:
            total = total - cfg.entropy_coef * agg.aggregate_loss(ent, mask, cfg.loss_agg, cfg.max_response_len)
    metrics["loss"] = jax.lax.stop_gradient(total)
    metrics["policy_loss"] = jax.lax.stop_gradient(policy_loss)
    return total, metrics
