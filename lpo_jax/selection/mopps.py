"""MoPPS: Beta-Bernoulli bandit per prompt with forgetting, Thompson-sampled acquisition (spec §4).

Model (NumPyro view): gamma ~ Beta(alpha, beta), c ~ Binomial(n, gamma). Only selected prompts update:
    alpha <- decay * alpha + (1 - decay) * alpha0 + c,   beta <- decay * beta + (1 - decay) * beta0 + (n - c)
decay = 1 is exact conjugacy; decay < 1 is a power-prior heuristic. Unselected prompts stay bit-identical.

Acquisition, one Thompson draw per candidate:
- "topk": the B draws nearest `target` (smallest (draw - target)^2);
- "threshold": if >= B draws lie in `band`, B of them uniformly at random, else the B nearest the band.
`predicted_success` is the posterior mean alpha / (alpha + beta).

`sampler="fast"` (default) draws Beta by the vectorised hash-seeded Gamma sampler of `_random` (exact
Marsaglia-Tsang); `sampler="numpyro"` uses `numpyro.distributions.Beta(...).sample` (threefry-based, several
seconds per million draws on CPU).

Prior-group fast path (large candidate sets; exact, not an approximation). Prompts never moved off the prior
by `update` keep posteriors bit-identical to (alpha0, beta0), so the prior-group candidates (N0 of them) have
iid Beta(alpha0, beta0) draws. Both acquisitions rank candidates by a score of the draw (topk: -|draw - target|;
threshold: 1 + U in the band, U an independent uniform shuffle key, else -distance to the band; the top B by
this score is exactly the reference rule). Only the B best prior-group scores can be selected; their joint law
is that of the B largest of N0 iid scores, generated from the B smallest uniform order statistics (exponential
spacings) through the score's inverse survival function (closed form for Beta(1, 1), bisection on `betainc`
otherwise) and attached to a uniformly random ordered B-sample of the group (sequential rejection sampling of
positions; top-B of hashed uniforms when B > 1024). Only the listed non-prior prompts draw Beta variates; the
merged top-B is the selection. Cost: O(M) for the posterior means plus O(#listed) draws, vs O(M) draws.
The state lists the prompts `update` moved off the prior (`seen_ids_C`, capacity C fixed at construction). The
fast path runs when C > 0 and M > 2C (static), and at run time only if the list is complete (<= C prompts
seen) and accounts for every non-prior candidate (checked by counting, so external edits of alpha/beta are
safe); otherwise the reference path runs, with draws bit-identical to `thompson_draws(state, candidates, k0)`
(k0 = first half of the key's split). Same law as the reference up to float32 resolution and ties; not the
same draws for a given key. Tests: tests/selection/test_selection_scale_mopps.py.
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from flax import struct
from jax import lax
from jax.scipy.special import betainc

from lpo_jax.selection import _random
from lpo_jax.selection.base import Selector
from lpo_jax.selection.validation import (check_common_hparams, check_decay, validate_candidates,
                                          validate_update)

AUTO_CAPACITY, AUTO_MIN_PROMPTS = 1 << 18, 1 << 18  # seen_capacity=None: C = min(2^18, N // 4) if N >= 2^18, else 0


@struct.dataclass
class MoPPSState:
    alpha_N: jnp.ndarray  # f32[N] Beta posterior alpha per prompt
    beta_N: jnp.ndarray  # f32[N]
    seen_ids_C: jnp.ndarray  # i32[C] prompts moved off the prior by `update`, in order; first num_seen valid
    num_seen: jnp.ndarray  # i32 count of such prompts (> C: list incomplete, fast path off for good)


def mopps_posterior(state: MoPPSState, ids) -> dist.Beta:
    """The Beta posterior over the success rate of prompts `ids` (a numpyro distribution, batch [len(ids)])."""
    return dist.Beta(state.alpha_N[ids], state.beta_N[ids])


def mopps_predictive(state: MoPPSState, ids, n: int) -> dist.BetaBinomial:
    """Posterior predictive of the next group's success count c (numpyro BetaBinomial)."""
    return dist.BetaBinomial(state.alpha_N[ids], state.beta_N[ids], total_count=n)


def mopps_prob_mixed(state: MoPPSState, ids, n: int):
    """P(0 < c < n) for the next group of n rollouts under the posterior predictive."""
    pred = mopps_predictive(state, ids, n)
    return 1.0 - jnp.exp(pred.log_prob(0)) - jnp.exp(pred.log_prob(n))


def _beta_draws(a, b, key, sampler):
    return dist.Beta(a, b).sample(key) if sampler == "numpyro" else _random.beta_sample(key, a, b)


def thompson_draws(state: MoPPSState, candidates, key, sampler: str = "fast"):
    """One posterior draw per candidate, f32[M] (what the reference `select` ranks; key = its split's first half)."""
    return _beta_draws(state.alpha_N[candidates], state.beta_N[candidates], key, sampler)


def _invert_increasing(fn, r, iters: int = 40):
    """d in [0, 1] with fn(d) = r by bisection (fn increasing), vectorised over r."""
    def body(_, lo_hi):
        lo, hi = lo_hi
        mid = 0.5 * (lo + hi)
        below = fn(mid) < r
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)
    lo, hi = lax.fori_loop(0, iters, body, (jnp.zeros_like(r), jnp.ones_like(r)))
    return 0.5 * (lo + hi)


def prior_score_quantile(r, *, alpha0, beta0, acquisition, target, band):
    """Inverse survival function of the acquisition score of a Beta(alpha0, beta0) draw: the score s with
    P(score > s) = r. Scores: topk -|g - target|; threshold 1 + U (U ~ U(0, 1)) in the band, else -distance."""
    uniform = alpha0 == 1.0 and beta0 == 1.0

    def cdf(x):
        x = jnp.clip(x, 0.0, 1.0)
        return x if uniform else betainc(jnp.float32(alpha0), jnp.float32(beta0), x)

    def two_sided_inverse(p, q, rr):  # inverse of d -> min(d, p) + min(d, q) (the uniform prior's CDFs)
        m = min(p, q)
        return jnp.where(rr <= 2.0 * m, 0.5 * rr, rr - m)

    if acquisition == "topk":  # P(|g - t| <= d) = F(t + d) - F(t - d)
        if uniform:
            return -two_sided_inverse(target, 1.0 - target, r)
        return -_invert_increasing(lambda d: cdf(target + d) - cdf(target - d), r)
    lo, hi = band
    p_in = cdf(jnp.float32(hi)) - cdf(jnp.float32(lo))
    rest = r - p_in  # P(0 < dist <= d) = F(lo) - F(lo - d) + F(hi + d) - F(hi)
    d = two_sided_inverse(lo, 1.0 - hi, rest) if uniform else _invert_increasing(
        lambda d: cdf(lo) - cdf(lo - d) + cdf(hi + d) - cdf(hi), rest)
    return jnp.where(r <= p_in, 2.0 - r / jnp.where(p_in > 0, p_in, 1.0), -d)


def make_mopps(num_prompts: int, batch_size: int, *, decay: float = 1.0, alpha0: float = 1.0, beta0: float = 1.0,
               acquisition: str = "topk", target: float = 0.5, band=(0.3, 0.7), sampler: str = "fast",
               warm_start_successes: Optional[np.ndarray] = None, warm_start_failures: Optional[np.ndarray] = None,
               warm_start_weight: float = 3.0, seen_capacity: Optional[int] = None) -> Selector:
    """MoPPS selector. Warm start (optional, off in the paper's main runs): alpha = w*successes + alpha0 etc.

    seen_capacity: C, the number of non-prior prompts the fast path can track (see the module docstring);
    0 disables it; None = min(262144, N // 4) for pools of >= 262144 prompts, else 0 (small pools: the reference
    is cheap). Cost grows with the number of listed prompts (branches of C/64, C/16, C/4, C slots, >= 4096).
    """
    check_common_hparams(num_prompts, batch_size)
    check_decay(decay)
    if alpha0 <= 0 or beta0 <= 0:
        raise ValueError(f"alpha0 and beta0 must be > 0, got {alpha0}, {beta0}.")
    if acquisition not in ("topk", "threshold"):
        raise ValueError(f"acquisition must be 'topk' or 'threshold', got {acquisition!r}.")
    if sampler not in ("fast", "numpyro"):
        raise ValueError(f"sampler must be 'fast' or 'numpyro', got {sampler!r}.")
    lo, hi = float(band[0]), float(band[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {band}.")
    if not 0.0 <= float(target) <= 1.0:
        raise ValueError(f"target must lie in [0, 1], got {target}.")
    if seen_capacity is None:
        seen_capacity = min(AUTO_CAPACITY, num_prompts // 4) if num_prompts >= AUTO_MIN_PROMPTS else 0
    if int(seen_capacity) != seen_capacity or seen_capacity < 0:
        raise ValueError(f"seen_capacity must be a non-negative integer (0: no fast path), got {seen_capacity}.")
    N, B, C = int(num_prompts), int(batch_size), min(int(seen_capacity), int(num_prompts))
    alpha0, beta0, target = float(alpha0), float(beta0), float(target)
    a0 = np.full((N,), alpha0, np.float32)
    b0 = np.full((N,), beta0, np.float32)
    if (warm_start_successes is None) != (warm_start_failures is None):
        raise ValueError("pass both warm_start_successes and warm_start_failures, or neither.")
    if warm_start_successes is not None:
        s, f = np.asarray(warm_start_successes, np.float32), np.asarray(warm_start_failures, np.float32)
        if s.shape != (N,) or f.shape != (N,) or (s < 0).any() or (f < 0).any():
            raise ValueError(f"warm-start counts must be non-negative arrays of shape ({N},).")
        a0, b0 = a0 + warm_start_weight * s, b0 + warm_start_weight * f
    off_prior = np.flatnonzero((a0 != np.float32(alpha0)) | (b0 != np.float32(beta0))).astype(np.int32)
    seen0 = np.zeros((max(C, 1),), np.int32)  # C = 0: one unused slot (orbax cannot save zero-size arrays)
    seen0[:min(C, off_prior.size)] = off_prior[:C]
    buckets = sorted({C >> (2 * i) for i in range(4) if (C >> (2 * i)) >= 4096} | {C})  # fast-branch sizes
    quantile_kw = dict(alpha0=alpha0, beta0=beta0, acquisition=acquisition, target=target, band=(lo, hi))

    def init(key):
        del key
        return MoPPSState(alpha_N=jnp.asarray(a0), beta_N=jnp.asarray(b0), seen_ids_C=jnp.asarray(seen0),
                          num_seen=jnp.int32(off_prior.size))

    def is_prior(a, b):
        return (a == alpha0) & (b == beta0)

    def reference_ids(a, b, candidates, k_draw, k_tie):
        g = _beta_draws(a, b, k_draw, sampler)
        if acquisition == "topk":
            return candidates[lax.top_k(-(g - target) ** 2, B)[1]]
        in_band = (g >= lo) & (g <= hi)
        dist_to_band = jnp.maximum(jnp.maximum(lo - g, g - hi), 0.0)
        shuffle = _random.hash_uniform(_random.key_to_seed(k_tie), _random.counters(g.shape[0]))
        enough = jnp.sum(in_band) >= B
        priority = jnp.where(enough, jnp.where(in_band, shuffle, -1.0), -dist_to_band)
        return candidates[lax.top_k(priority, B)[1]]

    def seen_scores(g, shuffle_seed):
        """Acquisition scores of the listed prompts' draws (top B by score = the reference rule)."""
        if acquisition == "topk":
            return -jnp.abs(g - target)
        shuffle = _random.hash_uniform(shuffle_seed, _random.counters(g.shape[0]))
        return jnp.where((g >= lo) & (g <= hi), 1.0 + shuffle, -jnp.maximum(jnp.maximum(lo - g, g - hi), 0.0))

    def fast_branch(size, member_C, a_C, b_C, ids_C, score_B, group_ids_B, k_draw):
        """Select among the first `size` listed prompts (all listed ones) and the prior group's B best."""
        member, ids = member_C[:size], ids_C[:size]
        g = _beta_draws(jnp.where(member, a_C[:size], 1.0), jnp.where(member, b_C[:size], 1.0),
                        jax.random.fold_in(k_draw, 1), sampler)
        score = jnp.where(member, seen_scores(g, _random.key_to_seed(k_draw, 4)), -jnp.inf)
        pos = lax.top_k(jnp.concatenate([score, score_B]), B)[1]
        return jnp.where(pos < size, ids[jnp.minimum(pos, size - 1)], group_ids_B[jnp.maximum(pos - size, 0)])

    def select(state, candidates, key):
        validate_candidates(candidates, N, B)
        M = candidates.shape[0]
        a, b = state.alpha_N[candidates], state.beta_N[candidates]
        k_draw, k_tie = jax.random.split(key)
        if C == 0 or M <= 2 * C:
            return state, reference_ids(a, b, candidates, k_draw, k_tie), dist.Beta(a, b).mean
        prior_M = is_prior(a, b)
        n_prior = jnp.sum(prior_M, dtype=jnp.int32)
        ids_C = state.seen_ids_C
        a_C, b_C = state.alpha_N[ids_C], state.beta_N[ids_C]
        member_C = (jnp.arange(C) < state.num_seen) & ~is_prior(a_C, b_C)
        if M < N:  # which listed prompts are candidates (M == N: all of them)
            member_C &= jnp.zeros((N,), bool).at[candidates].set(True)[ids_C]
        ok = (state.num_seen <= C) & (jnp.sum(member_C, dtype=jnp.int32) == M - n_prior)
        r_B = _random.smallest_uniform_order_stats(_random.key_to_seed(k_draw, 3), n_prior, B)
        score_B = jnp.where(jnp.isnan(r_B), -jnp.inf, prior_score_quantile(jnp.nan_to_num(r_B), **quantile_kw))
        group_seed = _random.key_to_seed(k_draw, 2)
        if B <= 1024:  # a uniformly random ordered B-sample of the prior group: rejection, O(B^2) not O(M)
            group_pos_B, sampled = _random.sample_without_replacement(
                group_seed, M, jnp.minimum(n_prior, B), B,
                lambda pos: is_prior(state.alpha_N[candidates[pos]], state.beta_N[candidates[pos]]))
        else:  # top-B of hashed uniform keys (ties between 24-bit keys fall to the lower position)
            shuffle_M = _random.hash_uniform(group_seed, _random.counters(M))
            group_pos_B, sampled = lax.top_k(jnp.where(prior_M, shuffle_M, -1.0), B)[1], True
        group_ids_B = candidates[group_pos_B]
        fast = [functools.partial(fast_branch, size) for size in buckets]
        branch = jnp.sum(state.num_seen > jnp.asarray(buckets[:-1], jnp.int32))  # smallest bucket holding the list
        ids = lax.switch(branch, fast, member_C, a_C, b_C, ids_C, score_B, group_ids_B, k_draw)
        # Fallback to the reference: a while_loop run 0 or 1 times. (On XLA:CPU a lax.cond/switch holding the
        # reference's large loops added ~20 ms per step even when not taken; this does not.)
        run_reference = ~(ok & sampled)
        ids = lax.while_loop(lambda c: c[0], lambda c: (False, reference_ids(
            state.alpha_N[candidates], state.beta_N[candidates], candidates, k_draw, k_tie)), (run_reference, ids))[1]
        return state, ids, dist.Beta(a, b).mean

    def update(state, selected, successes, n):
        validate_update(selected, successes, n, N)
        c = successes.astype(jnp.float32)
        a_old, b_old = state.alpha_N[selected], state.beta_N[selected]
        a = decay * a_old + (1.0 - decay) * alpha0 + c
        b = decay * b_old + (1.0 - decay) * beta0 + (n - c)
        seen_ids, num_seen = state.seen_ids_C, state.num_seen
        if C:  # append prompts leaving the prior; one returning to it (float corner) retires the list
            was_prior, now_prior = is_prior(a_old, b_old), is_prior(a, b)
            new = was_prior & ~now_prior
            slot = num_seen + jnp.cumsum(new, dtype=jnp.int32) - 1
            seen_ids = seen_ids.at[jnp.where(new, slot, C)].set(selected.astype(jnp.int32), mode="drop")
            num_seen = num_seen + jnp.sum(new, dtype=jnp.int32)
            num_seen = jnp.where(jnp.any(~was_prior & now_prior), jnp.maximum(num_seen, C + 1), num_seen)
        return MoPPSState(alpha_N=state.alpha_N.at[selected].set(a), beta_N=state.beta_N.at[selected].set(b),
                          seen_ids_C=seen_ids, num_seen=num_seen)

    return Selector(init=init, select=select, update=update)
