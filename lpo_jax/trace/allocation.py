"""TRACE two-stage rollout allocation (spec §1.2, §1.3, §2.1): static-shape, jittable.

Stage 1 (roots): maximize sum_i V_root(v_i, m_i), V_root(v, m) = 1 - v^m - (1-v)^m (:= 0 for m = 0), subject
to sum_i m_i = B_root, 0 <= m_i <= M. Gains Delta_0 = 0 < Delta_1 = 2v(1-v) break concavity, so budget is
given in *pair units* (m even); pair gains g_u = Delta_2u + Delta_2u+1 are non-increasing in u, hence a
global top-k over all prompts' pair gains is the exact optimum over even m (`allocate_roots`). The exact
optimum over all integer m (or multiples of any unit) is a knapsack, solved by a DP over prompts
(`allocate_roots_dp`).

Stage-1 objective (`root_objective`): "groups" is the spec's sum_i V_root(v_i, m_i), the expected number of
mixed groups. [ours] "trajectories" is sum_i m_i V_root(v_i, m_i), the expected number of roots that sit in a
mixed group, i.e. the rollouts whose GRPO advantage is non-zero. "groups" spreads pairs over many
mid-difficulty prompts (a pair mixes at most half the time); "trajectories" pays for fewer, larger groups on
the most uncertain prompts. Its gains are not concave in m (at v = 0.5: 0, 1, 1.25, 1.25, 1.19, ...), so only
the DP is exact for it.

Stage 2 (prefixes): per prompt i with roots' rewards r_ij, candidate nodes (j, t), 1 <= t < n_turns_ij,
predicted prefix success Vp: maximize sum V_pref = 1 - q^K, q = r Vp + (1 - r)(1 - Vp), with sum K = m_i N.
The u-th unit gains q^u (1 - q), non-increasing, so a per-prompt top-k is exact (`allocate_prefixes`).

Under predictor uncertainty [ours]: stage-1 values may be given per ensemble member, v [E, P]; then stage 1
maximises the members' mean objective E_e[V(v_e, m)] (for "groups": the mean pair gains, still
non-increasing, so the top-k stays exact). Members that disagree on a prompt lower its value: V is concave
near v = 1/2 and 0 at the extremes.

Ties are broken by a fixed order (prompt-major, lower index first) or, given a PRNG key, by a random
permutation: the result is always an exact optimum and is reproducible for a fixed key.
Predictions are clipped to [0, 1]; NaN predictions count as 0.5 (unknown). Invalid (padded) prompts or
roots never receive budget; if valid capacity is smaller than the budget, the shortfall stays unspent.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _clean(v):
    v = jnp.asarray(v, jnp.float32)
    return jnp.clip(jnp.where(jnp.isnan(v), 0.5, v), 0.0, 1.0)


def _members(v_P):
    """Cleaned stage-1 values as [E, P]: a [P] input is one member."""
    v = _clean(v_P)
    return v[None] if v.ndim == 1 else v


def root_value(v, m):
    """V_root(v, m) = P(m i.i.d. Bernoulli(v) outcomes are mixed); 0 for m <= 1 by convention."""
    v = _clean(v)
    m = jnp.asarray(m)
    mf = jnp.maximum(m, 0).astype(v.dtype)
    return jnp.where(m <= 1, 0.0, 1.0 - v ** mf - (1.0 - v) ** mf)


ROOT_OBJECTIVES = ("groups", "trajectories")


def root_objective(v, m, objective: str = "groups"):
    """Stage-1 value of m roots: "groups" V_root(v, m) (spec), "trajectories" m V_root(v, m) (module docstring)."""
    if objective not in ROOT_OBJECTIVES:
        raise ValueError(f"root objective must be one of {ROOT_OBJECTIVES}, got {objective!r}")
    val = root_value(v, m)
    return val * jnp.asarray(m, val.dtype) if objective == "trajectories" else val


def prefix_value(vp, r, k):
    """V_pref = 1 - q^k, q = r Vp + (1-r)(1-Vp): P(some of k continuations flips outcome r)."""
    vp, r = _clean(vp), jnp.asarray(r, jnp.float32)
    q = r * vp + (1.0 - r) * (1.0 - vp)
    return 1.0 - q ** jnp.asarray(k, jnp.float32)


def root_gains(v_P, M: int, unit: int = 2):
    """Marginal gains per unit of `unit` roots, [P, M // unit]; row u = V(unit(u+1)) - V(unit u).
    v [E, P] (ensemble members): the members' mean gains."""
    m = unit * jnp.arange(M // unit + 1)
    f = root_value(_members(v_P)[..., None], m)                                # [E, P, U + 1]
    return (f[..., 1:] - f[..., :-1]).mean(0)


def uniform_flat(key, shape):
    """U[0, 1) of `shape`, drawn flat and reshaped (multi-dim threefry compiles several times slower on CPU)."""
    size = 1
    for d in shape:
        size *= int(d)
    return jax.random.uniform(key, (size,)).reshape(shape)


def _order(scores, key=None, tie_bits=None):
    """Indices sorting `scores` (1-D) descending; ties by index, or by random 32-bit priorities (key or
    given `tie_bits`), then by index."""
    n = scores.shape[0]
    idx = jnp.arange(n)
    if tie_bits is None and key is not None:
        tie_bits = jax.random.bits(key, (n,))
    if tie_bits is None:
        return jnp.lexsort((idx, -scores))
    return jnp.lexsort((idx, tie_bits, -scores))


def _check_root_args(v_P, B_root, M, unit):
    if jnp.ndim(v_P) not in (1, 2):
        raise ValueError(f"v_P must be [P] predicted root success (or [E, P] per ensemble member), got shape "
                         f"{jnp.shape(v_P)}")
    if unit < 1 or B_root < 0 or B_root % unit:
        raise ValueError(f"B_root={B_root} must be a non-negative multiple of unit={unit}")
    capacity = jnp.shape(v_P)[-1] * unit * (M // unit)
    if B_root > capacity:
        raise ValueError(f"B_root={B_root} exceeds capacity P*{unit}*(M//{unit}) = {capacity}; raise M or the pool")


def allocate_roots(v_P, B_root: int, M: int, *, valid_P=None, key=None, unit: int = 2):
    """Roots per prompt m_P (int32, multiples of `unit`, sum = B_root, <= M): exact top-k over pair gains.

    `unit` must be 2 (pair units, exact) or 1 only when the caller accepts greedy (not exact: Delta_0 = 0).
    B_root, M and unit are static (Python ints).
    """
    _check_root_args(v_P, B_root, M, unit)
    if unit not in (1, 2):
        raise ValueError(f"unit must be 2 (exact pair units) or 1 (greedy), got {unit}; use allocate_roots_dp")
    gains = root_gains(v_P, M, unit)
    if valid_P is not None:
        gains = jnp.where(jnp.asarray(valid_P, bool)[:, None], gains, -jnp.inf)
    flat = gains.reshape(-1)
    chosen = _order(flat, key)[: B_root // unit]
    take = jnp.isfinite(flat[chosen]).astype(jnp.int32)
    counts = jnp.zeros(flat.shape, jnp.int32).at[chosen].add(take).reshape(gains.shape).sum(-1)
    return (unit * counts).astype(jnp.int32)


def allocate_roots_dp(v_P, B_root: int, M: int, *, valid_P=None, key=None, unit: int = 1,
                      objective: str = "groups"):
    """Exact optimum of `objective` over m_i in {0, unit, 2 unit, ...} <= M with sum = B_root: knapsack DP,
    O(P B M). v [E, P]: the members' mean objective (module docstring).

    Among equal optima the backtracking argmax takes the smallest m for later prompts first; given a PRNG
    key, prompts are visited in a random order instead (ties broken at random, reproducibly). Needs the
    valid prompts to hold the budget (sum of their capacity >= B_root); otherwise the result is meaningless.
    """
    _check_root_args(v_P, B_root, M, unit)
    v = _members(v_P)
    P = v.shape[1]
    valid = jnp.ones((P,), bool) if valid_P is None else jnp.asarray(valid_P, bool)
    order = jnp.arange(P) if key is None else jax.random.permutation(key, P)
    m = jnp.arange(M + 1)
    b = jnp.arange(B_root + 1)
    neg = jnp.float32(-jnp.inf)
    allowed = m % unit == 0

    def forward(best, inp):
        v_p, ok = inp                                                          # v_p [E]
        value = root_objective(v_p[:, None], m, objective).mean(0)             # [M+1]
        vals = jnp.where((ok & allowed) | (m == 0), value, neg)
        src = b[:, None] - m[None, :]                                        # [B+1, M+1]
        cand = jnp.where(src >= 0, best[jnp.clip(src, 0)], neg) + vals[None, :]
        return cand.max(-1), jnp.argmax(cand, -1).astype(jnp.int32)

    init = jnp.where(b == 0, 0.0, neg).astype(jnp.float32)
    _, choice = jax.lax.scan(forward, init, (v[:, order].T, valid[order]))   # choice [P, B+1]

    def backward(rest, choice_p):
        m_p = choice_p[rest]
        return rest - m_p, m_p

    _, m_ordered = jax.lax.scan(backward, jnp.int32(B_root), choice, reverse=True)
    return jnp.zeros_like(m_ordered).at[order].set(m_ordered)


def allocate_roots_uniform(key, valid_P, B_root: int, group_size: int):
    """Flat-GRPO baseline: B_root // group_size random valid prompts get `group_size` roots each."""
    if group_size < 1 or B_root % group_size:
        raise ValueError(f"B_root={B_root} must be a positive multiple of group_size={group_size}")
    valid = jnp.asarray(valid_P, bool)
    score = jnp.where(valid, uniform_flat(key, valid.shape), -1.0)
    chosen = jnp.argsort(-score)[: B_root // group_size]
    take = valid[chosen].astype(jnp.int32) * group_size
    return jnp.zeros(valid.shape, jnp.int32).at[chosen].add(take)


def prefix_candidates(root_valid_PM, n_turns_PM, T: int):
    """Candidate nodes (j, t): valid root and 1 <= t < n_turns[j], bool [P, M, T]."""
    t = jnp.arange(T)[None, None, :]
    return jnp.asarray(root_valid_PM, bool)[..., None] & (t >= 1) & (t < jnp.asarray(n_turns_PM)[..., None])


def prefix_gains(Vp_PMT, r_root_PM, cand_PMT, Kmax: int):
    """Unit gains q^u (1 - q), u = 0..Kmax-1, [P, M, T, Kmax]; -inf on non-candidates."""
    vp, r = _clean(Vp_PMT), jnp.asarray(r_root_PM, jnp.float32)[..., None]
    q = r * vp + (1.0 - r) * (1.0 - vp)
    g = q[..., None] ** jnp.arange(Kmax, dtype=jnp.float32) * (1.0 - q[..., None])
    return jnp.where(jnp.asarray(cand_PMT, bool)[..., None], g, -jnp.inf)


def allocate_prefixes(gains_PMTK, m_P, N: int, *, key=None):
    """Continuations per node K[P, M, T] (int32): per-prompt exact top-(m_i N) over finite unit gains.

    Spends min(m_i N, number of finite units) per prompt.
    """
    P = gains_PMTK.shape[0]
    flat = gains_PMTK.reshape(P, -1)

    def rank_of(row, bits):
        order = _order(row, tie_bits=bits)
        return jnp.zeros(row.shape, jnp.int32).at[order].set(jnp.arange(row.shape[0], dtype=jnp.int32))

    if key is None:
        rank = jax.vmap(lambda row: rank_of(row, None))(flat)
    else:
        rank = jax.vmap(rank_of)(flat, jax.random.bits(key, (flat.size,)).reshape(flat.shape))
    budget = (jnp.asarray(m_P, jnp.int32) * N)[:, None]
    sel = (rank < budget) & jnp.isfinite(flat)
    return sel.reshape(gains_PMTK.shape).sum(-1).astype(jnp.int32)


def allocate_prefixes_random(key, cand_PMT, root_valid_PM, N: int):
    """Tree-GRPO / TreePO baseline: each valid root draws N nodes uniformly (with replacement) from its
    candidates; a root without candidates leaves its N continuations unspent. K[P, M, T] int32."""
    cand = jnp.asarray(cand_PMT, bool)
    P, M, T = cand.shape
    cdf = jnp.cumsum(cand, -1) / jnp.maximum(cand.sum(-1, keepdims=True), 1)       # [P, M, T]
    u = uniform_flat(key, (P, M, N))
    draws = (u[..., None] >= cdf[:, :, None, :]).sum(-1).clip(0, T - 1)              # inverse CDF
    ok = (jnp.asarray(root_valid_PM, bool) & cand.any(-1))[..., None, None]
    return (jax.nn.one_hot(draws, T, dtype=jnp.int32) * ok).sum(-2)


def continuation_slots(K_PMT, C: int):
    """Counts -> C static slots per prompt: (src_root [P, C], branch_t [P, C], valid [P, C]).

    Slots are filled node by node in (j, t) order; invalid slots (beyond sum K) get src_root = branch_t = 0.
    Requires sum_(j,t) K <= C (true when m_i <= M and C = M N); the excess would be dropped.
    """
    K = jnp.asarray(K_PMT, jnp.int32)
    P, M, T = K.shape
    cum = jnp.cumsum(K.reshape(P, M * T), -1)
    slots = jnp.arange(C)
    node = jax.vmap(lambda c: jnp.searchsorted(c, slots, side="right"))(cum).clip(0, M * T - 1)
    valid = slots[None, :] < cum[:, -1:]
    return (jnp.where(valid, node // T, 0).astype(jnp.int32),
            jnp.where(valid, node % T, 0).astype(jnp.int32), valid)
