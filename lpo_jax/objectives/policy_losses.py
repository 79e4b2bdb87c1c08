"""Group policy-gradient losses on token log-ratios (spec §3), as losses to *minimise*.

Token functions take delta_BKT = logp - old_logp (masked, zero on padding) and advantages broadcast to
[B, K, 1] and return (loss_BKT, grad_zeroed_BKT): the per-token loss and where clipping zeroed its gradient
(CISPO never zeroes a gradient; its flag marks tokens whose IS weight was clipped). Reduce with
`aggregation.aggregate_loss`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lpo_jax.objectives import aggregation as agg
from lpo_jax.objectives.config import KL_ESTIMATORS, ObjectiveConfig


def ppo_clip_token_loss(log_ratio_BKT, adv_BKT, eps_low=0.2, eps_high=0.2, dual_clip_c=None,
                        log_ratio_clamp=20.0):
    """-min(r A, clip(r, 1-eps_low, 1+eps_high) A) per token (DAPO clip-higher: eps_high > eps_low).

    dual_clip_c (> 1): for A < 0 the loss is additionally capped at -c A (dual-clip PPO), which zeroes the
    gradient of tokens with r > c. log r is clamped to +-log_ratio_clamp before exp.
    """
    ratio = jnp.exp(jnp.clip(log_ratio_BKT, -log_ratio_clamp, log_ratio_clamp))
    unclipped = -adv_BKT * ratio
    clipped = -adv_BKT * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = jnp.maximum(unclipped, clipped)
    zeroed = clipped > unclipped
    if dual_clip_c is not None:
        cap = -adv_BKT * dual_clip_c
        dual = (adv_BKT < 0) & (cap < loss)
        loss = jnp.where(dual, cap, loss)
        zeroed = zeroed | dual
    return loss, zeroed


def gspo_token_loss(delta_BKT, mask_BKT, adv_BKT, eps_low=3e-4, eps_high=4e-4, log_ratio_clamp=10.0):
    """GSPO in verl's token form: token log-ratio sg(s_k) + logp - sg(logp), s_k = mean_t delta.

    Its value is the sequence ratio rho_k = exp(s_k) and its gradient rho_k grad log pi(y_t); with
    seq-mean-token-mean aggregation this equals mean_k min(rho A, clip(rho) A) of the sequence form.
    """
    s_BK = jax.lax.stop_gradient(agg.seq_aggregate(delta_BKT, mask_BKT, "mean"))
    s_BK = jnp.minimum(s_BK, log_ratio_clamp)
    token_log_ratio = s_BK[..., None] + delta_BKT - jax.lax.stop_gradient(delta_BKT)
    return ppo_clip_token_loss(token_log_ratio, adv_BKT, eps_low, eps_high, None, log_ratio_clamp)


def cispo_token_loss(delta_BKT, adv_BKT, eps_low=1.0, eps_high=0.28, log_ratio_clamp=20.0):
    """CISPO: -sg(clip(r, 1-eps_low, 1+eps_high)) A log pi per token; no token loses its gradient.

    The value uses delta = log pi - log pi_old in place of log pi (same gradient, ~0 on-policy).
    """
    ratio = jnp.exp(jnp.clip(delta_BKT, -log_ratio_clamp, log_ratio_clamp))
    weight = jax.lax.stop_gradient(jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high))
    clipped = (ratio < 1.0 - eps_low) | (ratio > 1.0 + eps_high)
    return -weight * adv_BKT * delta_BKT, clipped


def pg_policy_loss(delta_BKT, mask_BKT, targets, cfg: ObjectiveConfig):
    """Aggregated PG loss of cfg.policy_loss in {ppo, gspo, cispo}.

    Returns (loss scalar, c_BK, grad_zeroed_BKT, None); c = -A/K is the on-policy PG coefficient on
    grad log pi(y_k) (Prop. 1), reported for comparison with LPO's c.
    """
    adv_BK = targets.advantages_BK
    adv = adv_BK[..., None]
    if cfg.policy_loss == "ppo":
        tok, zeroed = ppo_clip_token_loss(delta_BKT, adv, cfg.clip_eps_low, cfg.clip_eps_high,
                                          cfg.dual_clip_c, cfg.log_ratio_clamp)
    elif cfg.policy_loss == "gspo":
        tok, zeroed = gspo_token_loss(delta_BKT, mask_BKT, adv, cfg.clip_eps_low, cfg.clip_eps_high,
                                      min(cfg.log_ratio_clamp, 10.0))
    elif cfg.policy_loss == "cispo":
        tok, zeroed = cispo_token_loss(delta_BKT, adv, cfg.clip_eps_low, cfg.clip_eps_high, cfg.log_ratio_clamp)
    else:
        raise ValueError(f"pg_policy_loss handles ppo/gspo/cispo, got policy_loss={cfg.policy_loss!r}.")
    loss = agg.aggregate_loss(tok, mask_BKT, cfg.loss_agg, cfg.max_response_len)
    c_BK = jax.lax.stop_gradient(-adv_BK / adv_BK.shape[-1])
    return loss, c_BK, zeroed & (mask_BKT > 0), None


def kl_to_reference(logp_BKT, ref_logp_BKT, estimator="k3"):
    """Per-token estimate of KL(pi || pi_ref) from samples of pi.

    k1 = log(pi/ref); k2 = 0.5 log(pi/ref)^2; k3 = ref/pi - log(ref/pi) - 1 (>= 0, unbiased);
    low_var_kl = k3 with log(ref/pi) clamped to [-20, 20] and the result to [-10, 10] (verl).
    """
    log_ratio = logp_BKT - ref_logp_BKT
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return jnp.exp(-log_ratio) + log_ratio - 1.0
    if estimator == "low_var_kl":
        x = jnp.clip(-log_ratio, -20.0, 20.0)
        return jnp.clip(jnp.exp(x) - x - 1.0, -10.0, 10.0)
    raise ValueError(f"Unknown kl_estimator {estimator!r}; choose one of {KL_ESTIMATORS}.")
