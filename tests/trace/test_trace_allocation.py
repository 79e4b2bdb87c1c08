"""TRACE allocators: spec §6 properties 1-4, 7 (budget arithmetic), 10, 11; brute force; no retrace."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lpo_jax.trace import allocation as al

SETTINGS = settings(max_examples=25, deadline=None)
roots_jit = jax.jit(al.allocate_roots, static_argnums=(1, 2))
root_value_jit = jax.jit(al.root_value)


def _np_root_value(v, m):
    return 0.0 if m <= 1 else 1.0 - v**m - (1.0 - v) ** m


# ---- property 1: V_root ----------------------------------------------------------------------------
@SETTINGS
@given(st.floats(0.0, 1.0), st.integers(0, 12))
def test_root_value_properties(v, m):
    vals = np.asarray(root_value_jit(jnp.array([v, 1.0 - v, 0.5, v], jnp.float32), jnp.array([m, m, m, m + 1])))
    val = float(vals[0])
    assert val == pytest.approx(float(vals[1]), abs=1e-6)   # symmetric
    assert val <= float(vals[2]) + 1e-6                      # max at 0.5
    assert val <= float(vals[3]) + 1e-6                      # non-decreasing in m
    if m <= 1 or v in (0.0, 1.0):
        assert val == 0.0
    assert val == pytest.approx(_np_root_value(np.float32(v), m), abs=1e-5)


@pytest.mark.parametrize("v,m", [(0.3, 4), (0.5, 2), (0.9, 8)])
def test_root_value_matches_monte_carlo(v, m):
    rng = np.random.default_rng(0)
    n = 100_000
    outcomes = rng.random((n, m)) < v
    mixed = (outcomes.any(1) & ~outcomes.all(1)).mean()
    val = float(root_value_jit(jnp.float32(v), m))
    assert abs(mixed - val) <= 3 * np.sqrt(val * (1 - val) / n) + 1e-9


# ---- property 2: pair gains and allocate_roots -----------------------------------------------------
@SETTINGS
@given(st.floats(0.0, 1.0))
def test_pair_gains_non_increasing(v):
    g = np.asarray(_gains_jit(jnp.array([v], jnp.float32)))[0]
    assert np.all(np.diff(g) <= 1e-6)
    assert g[0] == pytest.approx(2 * v * (1 - v), abs=1e-5)  # g_0 = V(2) - V(0) = 2 v (1 - v)


_gains_jit = jax.jit(lambda v: al.root_gains(v, 16))


class JitAgreesWithEagerTest(chex.TestCase):
    """Property 11 (jit and non-jit agree) on the allocators."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_allocators(self):
        roots = self.variant(al.allocate_roots, static_argnums=(1, 2))
        v = jnp.array([0.1, 0.5, 0.0, 0.35])
        assert np.asarray(roots(v, 8, 4)).tolist() == [0, 4, 0, 4]  # top pair gains .5 .455 .375 .352
        assert np.asarray(roots(v, 8, 4, key=jax.random.PRNGKey(0))).tolist() == [0, 4, 0, 4]


def test_allocate_roots_budget_even_and_bounded():
    v = jnp.array([0.1, 0.5, 0.7, 0.0, 1.0, 0.35, 0.5, 0.95])
    for B in (0, 10, 48):
        m = np.asarray(roots_jit(v, B, 6))
        assert m.sum() == B and np.all(m % 2 == 0) and np.all((0 <= m) & (m <= 6)), (B, m)
    m = np.asarray(roots_jit(v, 10, 6))
    assert m[3] == 0 and m[4] == 0  # v in {0, 1} gets nothing while mid prompts have capacity
    m = np.asarray(roots_jit(jnp.full((8,), 0.4), 10, 6))
    assert m.sum() == 10 and m.max() - m.min() <= 2  # equal v: even split up to ties


def test_dp_budget_and_optimality():
    dp = jax.jit(al.allocate_roots_dp, static_argnums=(1, 2))
    rng = np.random.default_rng(1)
    for _ in range(6):
        v = rng.random(3).astype(np.float32)
        B = 9
        m = np.asarray(dp(jnp.asarray(v), B, 6))
        assert m.sum() == B and np.all((0 <= m) & (m <= 6))
        best = max(sum(_np_root_value(v[i], c[i]) for i in range(3))
                   for c in itertools.product(range(7), repeat=3) if sum(c) == B)
        got = sum(_np_root_value(v[i], m[i]) for i in range(3))
        assert got == pytest.approx(best, abs=1e-5)


_dp_opts = jax.jit(al.allocate_roots_dp, static_argnums=(1, 2), static_argnames=("unit", "objective"))


@pytest.mark.parametrize("objective", al.ROOT_OBJECTIVES)
@pytest.mark.parametrize("unit", (1, 2))
def test_dp_objectives_units_and_random_ties_match_brute_force(objective, unit):
    """Both stage-1 objectives, any unit, with and without random tie order: DP == brute force."""
    rng = np.random.default_rng(7 + unit)
    value = lambda vi, mi: _np_root_value(vi, mi) * (mi if objective == "trajectories" else 1)  # noqa: E731
    for trial in range(6):
        v = rng.random(4).astype(np.float32)
        if trial == 0:
            v[:] = 0.5   # all tied
        B = 8
        key = jax.random.PRNGKey(trial) if trial % 2 else None
        m = np.asarray(_dp_opts(jnp.asarray(v), B, 4, key=key, unit=unit, objective=objective))
        assert m.sum() == B and np.all((0 <= m) & (m <= 4)) and np.all(m % unit == 0), m
        best = max(sum(value(v[i], c[i]) for i in range(4))
                   for c in itertools.product(range(0, 5, unit), repeat=4) if sum(c) == B)
        assert sum(value(v[i], m[i]) for i in range(4)) == pytest.approx(best, abs=1e-5), (v, m)


def test_trajectories_objective_concentrates_roots():
    """[ours] "trajectories" (expected roots in mixed groups) buys fewer, larger groups than the spec's "groups"."""
    v = jnp.full((8,), 0.5)
    groups = np.asarray(roots_jit(v, 8, 4))
    traj = np.asarray(_dp_opts(v, 8, 4, unit=2, objective="trajectories"))
    assert sorted(groups.tolist()) == [0, 0, 0, 0, 2, 2, 2, 2]   # 4 x V(2) = 2.0 > 2 x V(4) = 1.75
    assert sorted(traj.tolist()) == [0, 0, 0, 0, 0, 0, 4, 4]     # 2 x 4 V(4) = 7.0 > 4 x 2 V(2) = 4.0
    keyed = [tuple(np.asarray(_dp_opts(v, 8, 4, key=jax.random.PRNGKey(k), unit=2, objective="trajectories")))
             for k in range(6)]
    assert len(set(keyed)) > 1 and keyed[0] == tuple(np.asarray(_dp_opts(v, 8, 4, key=jax.random.PRNGKey(0), unit=2,
                                                                          objective="trajectories")))
    np.testing.assert_allclose(np.asarray(al.root_objective(jnp.float32(0.3), 4, "trajectories")),
                               4 * (1 - 0.3**4 - 0.7**4), rtol=1e-6)
    with pytest.raises(ValueError, match="root objective"):
        al.root_objective(0.5, 2, "mixed")


def test_allocate_roots_matches_brute_force_even():
    rng = np.random.default_rng(0)
    for trial in range(16):
        v = rng.random(3).astype(np.float32)
        if trial % 4 == 0:
            v[0] = 0.0
        B = (4, 10)[trial % 2]
        m = np.asarray(roots_jit(jnp.asarray(v), B, 6))
        best = max(sum(_np_root_value(v[i], c[i]) for i in range(3))
                   for c in itertools.product((0, 2, 4, 6), repeat=3) if sum(c) == B)
        got = sum(_np_root_value(v[i], m[i]) for i in range(3))
        assert got == pytest.approx(best, abs=1e-5), (v, B, m)


@pytest.mark.parametrize("objective", al.ROOT_OBJECTIVES)
def test_ensemble_values_maximise_the_members_mean_objective(objective):
    """[ours] v [E, P]: both allocators maximise mean_e objective(v_e, m) (brute force); E = 1 equals [P]."""
    rng = np.random.default_rng(11)
    value = lambda ve, mi: np.mean([_np_root_value(x, mi) for x in ve]) * (mi if objective == "trajectories" else 1)
    for trial in range(6):
        v = rng.random((3, 4)).astype(np.float32)
        key = jax.random.PRNGKey(trial) if trial % 2 else None
        m = np.asarray(_dp_opts(jnp.asarray(v), 8, 4, key=key, unit=2, objective=objective))
        best = max(sum(value(v[:, i], c[i]) for i in range(4))
                   for c in itertools.product(range(0, 5, 2), repeat=4) if sum(c) == 8)
        assert m.sum() == 8 and sum(value(v[:, i], m[i]) for i in range(4)) == pytest.approx(best, abs=1e-5)
        if objective == "groups":   # mean pair gains stay non-increasing: the top-k is exact too
            m_topk = np.asarray(roots_jit(jnp.asarray(v), 8, 4))
            assert sum(value(v[:, i], m_topk[i]) for i in range(4)) == pytest.approx(best, abs=1e-5)
        np.testing.assert_array_equal(_dp_opts(jnp.asarray(v[:1]), 8, 4, key=key, unit=2, objective=objective),
                                      _dp_opts(jnp.asarray(v[0]), 8, 4, key=key, unit=2, objective=objective))


def test_member_disagreement_lowers_a_prompts_value():
    """Same mean prediction 0.5: the prompt whose members agree gets the roots, the disputed one none."""
    v = jnp.array([[0.5, 0.1], [0.5, 0.9]])    # prompt 0: both 0.5; prompt 1: members say 0.1 and 0.9
    for objective in al.ROOT_OBJECTIVES:
        assert np.asarray(_dp_opts(v, 4, 4, unit=2, objective=objective)).tolist() == [4, 0]
    assert np.asarray(roots_jit(v, 2, 4)).tolist() == [2, 0]


def test_allocate_roots_valid_mask_and_errors():
    v = jnp.array([0.5, 0.5, 0.5, 0.5])
    m = np.asarray(jax.jit(lambda v, ok: al.allocate_roots(v, 8, 4, valid_P=ok))(v, jnp.array([True, False, True, False])))
    assert m.tolist() == [4, 0, 4, 0]
    with pytest.raises(ValueError, match="multiple of unit"):
        al.allocate_roots(v, 7, 4)
    with pytest.raises(ValueError, match="exceeds capacity"):
        al.allocate_roots(v, 18, 4)
    with pytest.raises(ValueError, match=r"\[E, P\] per ensemble member"):
        al.allocate_roots(v[None, None], 4, 4)


# ---- property 3: prefix gains and allocate_prefixes ------------------------------------------------
@SETTINGS
@given(st.floats(0.0, 1.0), st.integers(0, 1), st.integers(0, 6))
def test_prefix_value_closed_form(vp, r, k):
    val, g = _prefix_jit(jnp.float32(vp), jnp.float32(r), k)
    val, g = float(val), np.asarray(g)
    expect = 1 - vp**k if r == 1 else 1 - (1 - vp) ** k
    assert val == pytest.approx(expect, abs=1e-5)
    assert np.all(np.diff(g) <= 1e-7) and np.sum(g[:k]) == pytest.approx(expect, abs=1e-5)


@jax.jit
def _prefix_jit(vp, r, k):
    g = al.prefix_gains(jnp.full((1, 1, 1), vp), jnp.full((1, 1), r), jnp.ones((1, 1, 1), bool), 6)
    return al.prefix_value(vp, r, k), g[0, 0, 0]


def _prefix_case(rng, P=2, M=2, T=3):
    vp = rng.random((P, M, T)).astype(np.float32)
    r = rng.integers(0, 2, (P, M)).astype(np.float32)
    root_valid = rng.random((P, M)) < 0.8
    n_turns = rng.integers(1, T + 1, (P, M))
    cand = np.asarray(al.prefix_candidates(root_valid, n_turns, T))
    m = rng.integers(0, M + 1, (P,))
    return vp, r, root_valid, n_turns, cand, m


@pytest.fixture(scope="module")
def jit_prefix():
    return jax.jit(lambda vp, r, cand, m, key: al.allocate_prefixes(al.prefix_gains(vp, r, cand, 4), m, 2, key=key))


def test_allocate_prefixes_brute_force_and_budget(jit_prefix):
    rng = np.random.default_rng(3)
    N = 2
    for _ in range(12):
        vp, r, root_valid, n_turns, cand, m = _prefix_case(rng)
        K = np.asarray(jit_prefix(vp, r, cand, m, jax.random.PRNGKey(0)))
        for p in range(2):
            nodes = list(zip(*np.nonzero(cand[p])))
            budget = min(m[p] * N, 4 * len(nodes))
            assert K[p].sum() == budget
            assert np.all(K[p][~cand[p]] == 0)  # only candidates (valid root, 1 <= t < n_turns)
            q = {nd: r[p, nd[0]] * vp[p][nd] + (1 - r[p, nd[0]]) * (1 - vp[p][nd]) for nd in nodes}
            value = lambda counts: sum(1 - q[nd] ** c for nd, c in zip(nodes, counts))
            best = max((value(c) for c in itertools.product(range(5), repeat=len(nodes)) if sum(c) == budget),
                       default=0.0)
            assert value([K[p][nd] for nd in nodes]) == pytest.approx(best, abs=1e-5)


def test_allocate_prefixes_skips_zero_gain_nodes(jit_prefix):
    vp = np.full((1, 2, 3), 0.5, np.float32)
    r = np.array([[1.0, 0.0]], np.float32)
    vp[0, 0, 1] = 1.0   # success root, prefix certain to succeed: no flip possible
    vp[0, 1, 2] = 0.0   # failed root, prefix certain to fail
    cand = np.ones((1, 2, 3), bool)
    cand[:, :, 0] = False
    K = np.asarray(jit_prefix(vp, r, cand, np.array([2]), jax.random.PRNGKey(1)))
    assert K.sum() == 4 and K[0, 0, 1] == 0 and K[0, 1, 2] == 0


# ---- property 4: continuation slots ----------------------------------------------------------------
def test_continuation_slots_counts():
    rng = np.random.default_rng(5)
    fn = jax.jit(al.continuation_slots, static_argnums=1)
    src, bt, valid = fn(jnp.array([[[0, 2], [1, 0]]]), 4)
    assert np.asarray(src).tolist() == [[0, 0, 1, 0]] and np.asarray(bt).tolist() == [[1, 1, 0, 0]]
    assert np.asarray(valid).tolist() == [[True, True, True, False]]
    for _ in range(5):
        K = rng.integers(0, 3, (3, 2, 4)) * (rng.random((3, 2, 4)) < 0.4)
        C = 12
        src, bt, valid = (np.asarray(x) for x in fn(K, C))
        for p in range(3):
            assert valid[p].sum() == min(K[p].sum(), C)
            assert np.all(valid[p][: valid[p].sum()])  # valid slots first
            counts = np.zeros((2, 4), int)
            np.add.at(counts, (src[p][valid[p]], bt[p][valid[p]]), 1)
            assert np.array_equal(counts, K[p])
            assert np.all((0 <= src[p]) & (src[p] < 2) & (0 <= bt[p]) & (bt[p] < 4))
            assert np.all(src[p][~valid[p]] == 0) and np.all(bt[p][~valid[p]] == 0)


# ---- property 7 (arithmetic), 10, 11 ---------------------------------------------------------------
def test_budget_arithmetic_two_stages():
    rng = np.random.default_rng(7)
    P, M, T, N = 8, 4, 5, 2

    @jax.jit
    def two_stages(v, vp, r):
        m = al.allocate_roots(v, 16, M)
        root_valid = jnp.arange(M)[None] < m[:, None]
        cand = al.prefix_candidates(root_valid, jnp.full((P, M), T), T)
        K = al.allocate_prefixes(al.prefix_gains(vp, r, cand, M * N), m, N)
        return m, root_valid, al.continuation_slots(K, M * N)

    m, root_valid, (src, bt, valid) = two_stages(jnp.asarray(rng.random(P), jnp.float32),
                                                 jnp.asarray(rng.random((P, M, T)), jnp.float32),
                                                 jnp.asarray(rng.integers(0, 2, (P, M)), jnp.float32))
    m, root_valid = np.asarray(m), np.asarray(root_valid)
    assert int(root_valid.sum() + np.asarray(valid).sum()) == int((m * (1 + N)).sum()) == 16 * (1 + N)
    assert np.all(np.asarray(bt)[np.asarray(valid)] >= 1)


def test_trace_beats_uniform_on_mixed_groups():
    rng = np.random.default_rng(11)
    P, M, B = 64, 16, 128
    p = np.concatenate([rng.beta(0.4, 0.4, P // 2), rng.choice([0.0, 1.0], P // 2)]).astype(np.float32)
    expected = lambda m: sum(_np_root_value(p[i], m[i]) for i in range(P))
    trace = expected(np.asarray(roots_jit(jnp.asarray(p), B, M)))
    even = expected(np.full(P, B // P))
    uniform = jax.jit(lambda k: al.allocate_roots_uniform(k, jnp.ones(P, bool), B, M))
    flat = np.mean([expected(np.asarray(uniform(jax.random.PRNGKey(s)))) for s in range(8)])
    assert trace > even + 1.0 and trace > flat + 1.0, (trace, even, flat)


def test_reproducible_and_no_retrace():
    calls = []

    @chex.assert_max_traces(n=1)
    def alloc(v, vp, r, cand, key):
        calls.append(1)
        k1, k2 = jax.random.split(key)
        m = al.allocate_roots(v, 8, 4, key=k1)
        K = al.allocate_prefixes(al.prefix_gains(vp, r, cand, 8), m, 2, key=k2)
        return m, K, al.continuation_slots(K, 8)

    fn = jax.jit(alloc)
    rng = np.random.default_rng(0)
    args = lambda: (jnp.full((4,), 0.5), jnp.asarray(rng.random((4, 4, 3)), jnp.float32),
                    jnp.asarray(rng.integers(0, 2, (4, 4)), jnp.float32), jnp.ones((4, 4, 3), bool))
    a = args()
    out1 = fn(*a, jax.random.PRNGKey(3))
    out2 = fn(*a, jax.random.PRNGKey(3))
    out3 = fn(*args(), jax.random.PRNGKey(4))
    chex.assert_trees_all_equal(out1, out2)
    assert len(calls) == 1
    m1, m3 = np.asarray(out1[0]), np.asarray(fn(*a, jax.random.PRNGKey(9))[0])
    assert m1.sum() == m3.sum() == 8  # ties (equal v) broken randomly, budget unchanged
    del out3


def test_random_expansion_baseline():
    cand = np.zeros((2, 3, 4), bool)
    cand[0, 0, 1:3] = True
    cand[1, 2, 1] = True
    root_valid = np.array([[True, True, False], [True, False, True]])
    K = np.asarray(jax.jit(al.allocate_prefixes_random, static_argnums=3)(jax.random.PRNGKey(0), cand, root_valid, 3))
    assert K[0, 0].sum() == 3 and K[0, 1].sum() == 0 and K[1, 2, 1] == 3 and K[1, 0].sum() == 0
    assert np.all(K[~cand] == 0)
