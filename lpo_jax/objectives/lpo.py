"""LPO: listwise target projection on the response simplex (spec §4-§6).

Per group (K responses), with s_k the sequence log-ratio log pi_theta(y_k) - log pi_b(y_k):

    target     w*  = softmax(R / tau + s_t)     (Alg. 1: s_t = 0, frozen per rollout batch)
    policy     P   = softmax(s)
    loss       D(w*, P), gradient  sum_k c_k grad s_k,   c_k = P_k (dD/dP_k - sum_j P_j dD/dP_j)

Coefficients: fwd (KL(w*||P)) c = P - w*; rev (KL(P||w*)) c = P (d - P.d), d = log P - log w*; point
(-sum w* s) c = -w*; js / hellinger / chi2 by autodiff through softmax(s). All functions take target
*logits* phi (log w* up to a per-group constant). K = 1 uses the virtual simplex {response, baseline}: a
second item with log-ratio 0 and target logit 0 is appended, and only the real response's c is returned.

Token clipping (spec §6, §9.2): the surrogate uses the token log-ratio clipped to [log(1-eps_lo),
log(1+eps_hi)]. Defaults: coefficients from the *unclipped* s (`lpo_coef_from`), symmetric-hard clipping
(`lpo_clip="hard"`: a token outside the band gets zero gradient whatever sign(c)); `"sign"` is PPO-style
(cut only the side that c pushes towards: c < 0 raises s, so cut delta > hi; c > 0 cuts delta < lo); `"none"`
gives the exact gradient of D. The loss *value* is D(w*, P) at the unclipped s (straight-through: the
surrogate sum_k c_k (l_k - sg(l_k)) adds the gradient and zero value). Groups: sum over k, mean over valid
prompts, no 1/K (c carries it; on-policy c_rev = -A/K). Sequence log-ratios use `seq_logprob_agg` ("mean",
the default and our Eq. 3 reading, makes LPO_rev match GRPO's seq-mean-token-mean exactly on-policy; "sum" = TPO).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lpo_jax.objectives import aggregation as agg
from lpo_jax.objectives.config import DIVERGENCES, ObjectiveConfig

_LOG2 = 0.6931471805599453


def lpo_log_target(rewards_BK, tau_B, s_t_BK=None) -> jax.Array:
    """log w* = log_softmax(R/tau + s_t) per group, [B, K]. Centring R is for numerics only."""
    phi = (rewards_BK - rewards_BK.mean(-1, keepdims=True)) / jnp.asarray(tau_B)[..., None]
    if s_t_BK is not None:
        phi = phi + s_t_BK
    return jax.nn.log_softmax(phi, axis=-1)


def _virtual_simplex(s_BK, phi_BK):
    """Append the K = 1 virtual baseline item (log-ratio 0, target logit 0); identity for K >= 2."""
    if s_BK.shape[-1] != 1:
        return s_BK, phi_BK
    return (jnp.concatenate([s_BK, jnp.zeros_like(s_BK)], -1),
            jnp.concatenate([phi_BK, jnp.zeros_like(phi_BK)], -1))


def _divergence_on_simplex(s, phi, kind):
    """D(w*, softmax(s)) per group [B] for K >= 2 arrays (no virtual item handling)."""
    log_p = jax.nn.log_softmax(s, -1)
    log_w = jax.nn.log_softmax(phi, -1)
    p, w = jnp.exp(log_p), jnp.exp(log_w)
    if kind == "fwd":
        return jnp.where(w > 0, w * (log_w - log_p), 0.0).sum(-1)
    if kind == "rev":
        return (p * (log_p - log_w)).sum(-1)
    if kind == "js":
        log_m = jnp.logaddexp(log_w, log_p) - _LOG2
        return 0.5 * (jnp.where(w > 0, w * (log_w - log_m), 0.0).sum(-1) + (p * (log_p - log_m)).sum(-1))
    if kind == "hellinger":
        return 1.0 - jnp.exp(0.5 * (log_w + log_p)).sum(-1)
    if kind == "chi2":
        return jnp.exp(2.0 * log_w - log_p).sum(-1) - 1.0
    if kind == "point":
        return -(w * s).sum(-1)
    raise ValueError(f"Unknown divergence {kind!r}; choose one of {DIVERGENCES}.")


def lpo_divergence(s_BK, phi_BK, kind: str = "fwd") -> jax.Array:
    """D(w*, P_theta) per group, [B]: w* = softmax(phi), P = softmax(s). Differentiable in s (exact branch).

    fwd = KL(w*||P), rev = KL(P||w*), js = Jensen-Shannon, hellinger = 1 - sum sqrt(w P) (squared),
    chi2 = sum w^2/P - 1 (Pearson, unbounded coefficients as P_k -> 0), point = -sum w* s (not a divergence).
    """
    return _divergence_on_simplex(*_virtual_simplex(s_BK, phi_BK), kind)


def lpo_coefficients(s_BK, phi_BK, kind: str = "fwd") -> jax.Array:
    """c = dD/ds per group, [B, K]; the descent direction is sum_k c_k grad log pi(y_k).

    fwd: P - w* (|c_k| <= 1, sum |c| <= 2); rev: P (d - d_bar) (unbounded); point: -w* (sum = -1);
    js / hellinger / chi2: jax.grad of D through softmax(s) (js and hellinger bounded, |c_k| < 1 and <= 1/2;
    chi2 unbounded as P_k -> 0 under target mass). Zero-sum for all but point (and K = 1).
    """
    K = s_BK.shape[-1]
    s2, phi2 = _virtual_simplex(s_BK, phi_BK)
    log_p = jax.nn.log_softmax(s2, -1)
    log_w = jax.nn.log_softmax(phi2, -1)
    if kind == "fwd":
        c = jnp.exp(log_p) - jnp.exp(log_w)
    elif kind == "rev":
        p, d = jnp.exp(log_p), log_p - log_w
        c = p * (d - (p * d).sum(-1, keepdims=True))
    elif kind == "point":
        c = -jnp.exp(log_w)
    elif kind in DIVERGENCES:
        c = jax.grad(lambda s: _divergence_on_simplex(s, phi2, kind).sum())(s2)
    else:
        raise ValueError(f"Unknown divergence {kind!r}; choose one of {DIVERGENCES}.")
    return c[..., :K]


def lpo_policy_loss(delta_BKT, mask_BKT, targets, cfg: ObjectiveConfig):
    """LPO surrogate over masked token log-ratios delta = logp - old_logp.

    Returns (loss scalar, c_BK, grad_zeroed_BKT bool, s_BK). Gradient: (1/G) sum_b sum_k c_bk grad l_bk with
    l = seq_aggregate(clipped delta); value: (1/G) sum_b D(w*_b, P_b) at the unclipped s.
    """
    mode = cfg.seq_logprob_agg
    s = agg.seq_aggregate(delta_BKT, mask_BKT, mode)
    lo, hi = jnp.log1p(-cfg.clip_eps_low), jnp.log1p(cfg.clip_eps_high)
    delta_clip = jnp.clip(delta_BKT, lo, hi)
    s_for_c = s if cfg.lpo_coef_from == "unclipped" else agg.seq_aggregate(delta_clip, mask_BKT, mode)
    phi = targets.target_logits_BK
    c = jax.lax.stop_gradient(lpo_coefficients(jax.lax.stop_gradient(s_for_c), phi, cfg.divergence))
    if cfg.lpo_clip == "none":
        used, zeroed = delta_BKT, jnp.zeros(delta_BKT.shape, bool)
    elif cfg.lpo_clip == "hard":
        used, zeroed = delta_clip, (delta_BKT < lo) | (delta_BKT > hi)
    else:  # "sign": PPO-style, cut only the side c pushes towards
        raising = (c < 0)[..., None]
        used = jnp.where(raising, jnp.minimum(delta_BKT, hi), jnp.maximum(delta_BKT, lo))
        zeroed = jnp.where(raising, delta_BKT > hi, delta_BKT < lo)
    ell = agg.seq_aggregate(used, mask_BKT, mode)
    value_B = jax.lax.stop_gradient(lpo_divergence(jax.lax.stop_gradient(s), phi, cfg.divergence))
    per_group = value_B + (c * (ell - jax.lax.stop_gradient(ell))).sum(-1)
    valid = agg.valid_groups(mask_BKT)
    loss = (valid * per_group).sum() / agg.num_valid_groups(mask_BKT)
    return loss, c, zeroed & (mask_BKT > 0), s
