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

Padded items (per-item validity): a target logit of -inf (`INVALID_LOGIT`) marks an item that is not part of
its group (e.g. an empty leaf slot of a static-shape TRACE tree). It is left out of w*, of P_theta = softmax(s)
and of D; its coefficient is 0 and the coefficients of the valid items still sum to zero. `prepare_masked`
builds such targets from a validity mask; with every item valid it equals `advantages.prepare`, and targets
without -inf logits behave exactly as before.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lpo_jax.objectives import aggregation as agg
from lpo_jax.objectives.advantages import Targets, check_prepare_inputs
from lpo_jax.objectives.config import BASELINES, DIVERGENCES, ObjectiveConfig

_LOG2 = 0.6931471805599453
INVALID_LOGIT = -float("inf")


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


def item_valid(phi_BK) -> jax.Array:
    """[B, K] bool: items whose target logit is not INVALID_LOGIT (-inf); padded items are excluded from
    both softmaxes (w* and P_theta), from D and from the coefficients."""
    return ~jnp.isneginf(phi_BK)


def _masked_logs(s, phi):
    """(log P, log w*, valid) over the valid items of each group, with log 0 -> 0 on invalid items (so no
    -inf reaches arithmetic). A group with no valid item is computed as all-valid with phi = 0 and its
    outputs are zeroed by the callers through `valid`."""
    valid = item_valid(phi)
    any_valid = valid.any(-1, keepdims=True)
    where = valid | ~any_valid
    phi_safe = jnp.where(where & any_valid, phi, 0.0)
    log_p = jax.nn.log_softmax(s, -1, where=where)
    log_w = jax.nn.log_softmax(phi_safe, -1, where=where)
    return jnp.where(where, log_p, 0.0), jnp.where(where, log_w, 0.0), where, valid


def _divergence_on_simplex(s, phi, kind):
    """D(w*, softmax(s)) per group [B] for K >= 2 arrays (no virtual item handling); -inf target logits
    mark padded items (excluded)."""
    log_p, log_w, where, valid = _masked_logs(s, phi)
    p, w = jnp.where(where, jnp.exp(log_p), 0.0), jnp.where(where, jnp.exp(log_w), 0.0)
    if kind == "fwd":
        out = jnp.where(w > 0, w * (log_w - log_p), 0.0).sum(-1)
    elif kind == "rev":
        out = (p * (log_p - log_w)).sum(-1)
    elif kind == "js":
        log_m = jnp.logaddexp(log_w, log_p) - _LOG2
        out = 0.5 * (jnp.where(w > 0, w * (log_w - log_m), 0.0).sum(-1) + (p * (log_p - log_m)).sum(-1))
    elif kind == "hellinger":
        out = 1.0 - jnp.where(where, jnp.exp(0.5 * (log_w + log_p)), 0.0).sum(-1)
    elif kind == "chi2":
        out = jnp.where(where, jnp.exp(2.0 * log_w - log_p), 0.0).sum(-1) - 1.0
    elif kind == "point":
        out = -(w * jnp.where(where, s, 0.0)).sum(-1)
    else:
        raise ValueError(f"Unknown divergence {kind!r}; choose one of {DIVERGENCES}.")
    return jnp.where(valid.any(-1), out, 0.0)


def lpo_divergence(s_BK, phi_BK, kind: str = "fwd") -> jax.Array:
    """D(w*, P_theta) per group, [B]: w* = softmax(phi), P = softmax(s). Differentiable in s (exact branch).

    fwd = KL(w*||P), rev = KL(P||w*), js = Jensen-Shannon, hellinger = 1 - sum sqrt(w P) (squared),
    chi2 = sum w^2/P - 1 (Pearson, unbounded coefficients as P_k -> 0), point = -sum w* s (not a divergence).
    Items with phi = -inf (`INVALID_LOGIT`, padding) are left out of both distributions; a group without
    valid items has D = 0.
    """
    return _divergence_on_simplex(*_virtual_simplex(s_BK, phi_BK), kind)


def lpo_coefficients(s_BK, phi_BK, kind: str = "fwd") -> jax.Array:
    """c = dD/ds per group, [B, K]; the descent direction is sum_k c_k grad log pi(y_k).

    fwd: P - w* (|c_k| <= 1, sum |c| <= 2); rev: P (d - d_bar) (unbounded); point: -w* (sum = -1);
    js / hellinger / chi2: jax.grad of D through softmax(s) (js and hellinger bounded, |c_k| < 1 and <= 1/2;
    chi2 unbounded as P_k -> 0 under target mass). Zero-sum for all but point (and K = 1). Padded items
    (phi = -inf) get c = 0 and the sums run over the valid items only.
    """
    K = s_BK.shape[-1]
    s2, phi2 = _virtual_simplex(s_BK, phi_BK)
    if kind == "fwd" or kind == "rev" or kind == "point":
        log_p, log_w, where, valid = _masked_logs(s2, phi2)
        p, w = jnp.where(where, jnp.exp(log_p), 0.0), jnp.where(where, jnp.exp(log_w), 0.0)
        if kind == "fwd":
            c = p - w
        elif kind == "rev":
            d = log_p - log_w
            c = p * (d - (p * d).sum(-1, keepdims=True))
        else:
            c = -w
        c = jnp.where(valid, c, 0.0)
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


def _masked_group_stats(rewards_BK, valid_BK, weight_BK, cfg: ObjectiveConfig):
    """(mu_B, tau_B, shift) of cfg.baseline over the valid items only (advantages.group_temperature on the
    valid sub-group; rpp whitening over valid items with `weight_BK`)."""
    v = valid_BK.astype(rewards_BK.dtype)
    n = v.sum(-1)
    mu = (v * rewards_BK).sum(-1) / jnp.maximum(n, 1.0)
    centred = jnp.where(valid_BK, rewards_BK - mu[:, None], 0.0)
    zero = jnp.zeros((), rewards_BK.dtype)
    mode, eps = cfg.baseline, cfg.std_eps
    if mode == "grpo":
        var = (centred ** 2).sum(-1) / jnp.maximum(n - cfg.grpo_std_ddof, 1.0)
        return mu, jnp.sqrt(var) + eps, zero
    if mode == "drgrpo":
        return mu, jnp.ones_like(mu), zero
    if mode == "rloo":
        return mu, jnp.where(n >= 2, (n - 1.0) / jnp.maximum(n, 1.0), 1.0), zero
    if mode == "maxrl":
        return mu, jnp.maximum(mu, 0.0) + eps, zero
    if mode == "constant":
        return mu, jnp.full_like(mu, cfg.tau0), zero
    if mode == "rpp_baseline":
        w = weight_BK * v
        total = jnp.maximum(w.sum(), 1e-30)
        shift = (w * centred).sum() / total
        std = jnp.sqrt((w * (centred - shift) ** 2).sum() / jnp.maximum(total - 1.0, 1.0)) + eps
        return mu, jnp.full_like(mu, std), shift
    raise ValueError(f"Unknown baseline {mode!r}; choose one of {BASELINES}.")


def prepare_masked(rewards_BK, mask_BKT, cfg: ObjectiveConfig, valid_BK=None) -> Targets:
    """`advantages.prepare` with a per-item validity mask (groups of K >= 2 slots, some of them padding).

    An item is valid when ``valid_BK`` (default all True) holds and its loss mask has a token. Group
    statistics (mean, std, rloo's (n-1)/n, rpp whitening) use the valid items only; invalid items get
    advantage 0 and target logit `INVALID_LOGIT`, so LPO leaves them out of the target softmax and of the
    coefficients. ``zero_var_B``: the valid rewards are all equal (True with fewer than two). With every item
    valid the result equals ``advantages.prepare(rewards_BK, mask_BKT, cfg)``.
    """
    check_prepare_inputs(rewards_BK, mask_BKT, cfg)
    if rewards_BK.shape[-1] < 2:
        raise ValueError(f"prepare_masked needs groups of K >= 2 slots, got K = {rewards_BK.shape[-1]}; "
                         "use advantages.prepare for K = 1.")
    if valid_BK is not None and tuple(jnp.shape(valid_BK)) != tuple(rewards_BK.shape):
        raise ValueError(f"valid_BK has shape {tuple(jnp.shape(valid_BK))}, expected rewards_BK's "
                         f"{tuple(rewards_BK.shape)}.")
    dtype = agg.compute_dtype(rewards_BK)
    rewards = jnp.asarray(rewards_BK, dtype)
    mask = jnp.asarray(mask_BKT).astype(dtype)
    lengths = agg.seq_lengths(mask)
    valid = lengths > 0
    if valid_BK is not None:
        valid = valid & jnp.asarray(valid_BK, bool)
    weight = lengths if cfg.rpp_whiten == "token" else (lengths > 0).astype(dtype)
    mu, tau, shift = _masked_group_stats(rewards, valid, weight, cfg)
    centred = rewards - mu[:, None]
    phi = jnp.where(valid, centred / tau[:, None], INVALID_LOGIT)
    adv = jnp.where(valid, (centred - shift) / tau[:, None], 0.0)
    hi = jnp.where(valid, rewards, -jnp.inf).max(-1)
    lo = jnp.where(valid, rewards, jnp.inf).min(-1)
    zero_var = (valid.sum(-1) < 2) | (hi == lo)
    return Targets(advantages_BK=adv, target_logits_BK=phi, tau_B=tau, zero_var_B=zero_var)
