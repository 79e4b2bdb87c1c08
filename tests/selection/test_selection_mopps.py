"""MoPPS properties (spec §7, 1-5) plus jit/no-jit equivalence."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats
from absl.testing import parameterized

from lpo_jax.selection.mopps import make_mopps, mopps_prob_mixed, thompson_draws

N, B, K = 64, 8, 8
_draws = jax.jit(thompson_draws, static_argnums=3)
_SELECTORS = {}


def _select_fn(acquisition, target=0.5):
    """Jitted select of a shared selector per configuration (compiled once per module)."""
    if (acquisition, target) not in _SELECTORS:
        sel = make_mopps(N, B, acquisition=acquisition, target=target)
        _SELECTORS[acquisition, target] = (sel, jax.jit(sel.select))
    return _SELECTORS[acquisition, target]


class MoPPSUpdateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_exact_conjugacy_at_decay_one(self):
        sel = make_mopps(N, B, decay=1.0, alpha0=1.0, beta0=2.0)
        update = self.variant(sel.update, static_argnums=3)
        state = sel.init(jax.random.key(0))
        rng = np.random.default_rng(0)
        ids = jnp.arange(B, dtype=jnp.int32)
        total = np.zeros(B)
        for _ in range(5):
            c = rng.integers(0, K + 1, size=B)
            total += c
            state = update(state, ids, jnp.asarray(c, jnp.int32), K)
        np.testing.assert_allclose(state.alpha_N[:B], 1.0 + total, rtol=1e-6)
        np.testing.assert_allclose(state.beta_N[:B], 2.0 + 5 * K - total, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_unselected_prompts_bit_identical(self):
        sel = make_mopps(N, B, decay=0.5)
        update = self.variant(sel.update, static_argnums=3)
        state = sel.init(jax.random.key(0))
        state = update(state, jnp.arange(B, dtype=jnp.int32), jnp.full((B,), 3, jnp.int32), K)
        before_a, before_b = np.asarray(state.alpha_N), np.asarray(state.beta_N)
        ids = jnp.arange(B, 2 * B, dtype=jnp.int32)
        state = update(state, ids, jnp.full((B,), 5, jnp.int32), K)
        rest = np.r_[0:B, 2 * B:N]
        assert np.array_equal(np.asarray(state.alpha_N)[rest], before_a[rest])
        assert np.array_equal(np.asarray(state.beta_N)[rest], before_b[rest])
        assert not np.array_equal(np.asarray(state.alpha_N)[B:2 * B], before_a[B:2 * B])


def test_conjugacy_matches_grid_posterior():
    """The Beta posterior mean/variance equal those of a brute-force grid posterior under Binomial likelihood."""
    sel = make_mopps(4, 1, decay=1.0, alpha0=1.5, beta0=0.8)
    state = sel.init(jax.random.key(0))
    counts = [3, 8, 0, 5]
    for c in counts:
        state = sel.update(state, jnp.array([2]), jnp.array([c]), K)
    grid = np.linspace(1e-6, 1 - 1e-6, 100001)  # float64 grid, prior x Binomial likelihoods
    logp = stats.beta(1.5, 0.8).logpdf(grid) + sum(stats.binom(K, grid).logpmf(c) for c in counts)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean, var = (w * grid).sum(), (w * grid**2).sum() - (w * grid).sum() ** 2
    post = dist.Beta(state.alpha_N[2], state.beta_N[2])
    np.testing.assert_allclose(float(post.mean), mean, rtol=1e-4)
    np.testing.assert_allclose(float(post.variance), var, rtol=1e-3)


@pytest.mark.parametrize("decay, s", [(0.5, 0.25), (0.8, 0.625), (0.3, 1.0)])
def test_fixed_point_under_constant_rate(decay, s):
    sel = make_mopps(4, 1, decay=decay)
    update = jax.jit(sel.update, static_argnums=3)
    state = sel.init(jax.random.key(0))
    c = jnp.array([int(K * s)])
    for _ in range(200):
        state = update(state, jnp.array([1]), c, K)
    a_star = 1.0 + K * s / (1 - decay)
    b_star = 1.0 + K * (1 - s) / (1 - decay)
    np.testing.assert_allclose(state.alpha_N[1], a_star, rtol=1e-5)
    np.testing.assert_allclose(state.beta_N[1], b_star, rtol=1e-5)
    mean = float(state.alpha_N[1] / (state.alpha_N[1] + state.beta_N[1]))
    np.testing.assert_allclose(mean, (1 - decay + K * s) / (2 * (1 - decay) + K), rtol=1e-5)
    if (decay, s) == (0.5, 0.25):
        assert abs(mean - 0.2778) < 5e-5  # spec's number


def test_thompson_draws_average_to_posterior_mean():
    sel = make_mopps(N, B, decay=1.0)
    state = sel.init(jax.random.key(0))
    ids = jnp.arange(N, dtype=jnp.int32)
    state = sel.update(state, ids, jnp.asarray(np.arange(N) % (K + 1), jnp.int32), K)
    means = np.asarray(state.alpha_N / (state.alpha_N + state.beta_N))
    reps = 200  # same shape as the other tests: one compilation
    draws = np.stack([np.asarray(_draws(state, ids, jax.random.key(r), "fast")) for r in range(reps)])
    sd = np.sqrt(means * (1 - means) / (np.asarray(state.alpha_N + state.beta_N) + 1) / reps)
    assert np.all(np.abs(draws.mean(0) - means) < 4.5 * sd)


class MoPPSAcquisitionTest(parameterized.TestCase):
    def _trained(self, acquisition, target=0.5):
        sel, select = _select_fn(acquisition, target)
        state = sel.init(jax.random.key(0))
        rng = np.random.default_rng(1)
        state = sel.update(state, jnp.arange(N, dtype=jnp.int32), jnp.asarray(rng.integers(0, K + 1, N), jnp.int32), K)
        return select, state

    def test_topk_takes_draws_nearest_target(self, target=0.3):
        select, state = self._trained("topk", target)
        cand = jnp.arange(N, dtype=jnp.int32)
        key = jax.random.key(5)
        _, ids, pred = select(state, cand, key)
        g = np.asarray(_draws(state, cand, jax.random.split(key)[0], "fast"))
        expected = np.argsort((g - target) ** 2)[:B]
        assert set(np.asarray(ids).tolist()) == set(expected.tolist())
        np.testing.assert_allclose(pred, state.alpha_N / (state.alpha_N + state.beta_N), rtol=1e-6)

    def test_threshold_returns_only_in_band_when_enough(self):
        select, state = self._trained("threshold")
        cand = jnp.arange(N, dtype=jnp.int32)
        hits = 0
        for seed in range(6):
            key = jax.random.key(seed)
            _, ids, _ = select(state, cand, key)
            g = np.asarray(_draws(state, cand, jax.random.split(key)[0], "fast"))
            in_band = (g >= 0.3) & (g <= 0.7)
            if in_band.sum() >= B:
                hits += 1
                assert in_band[np.asarray(ids)].all()
            else:  # fewer than B in band: all of them are taken, then the nearest to the band
                dist_band = np.maximum(np.maximum(0.3 - g, g - 0.7), 0)
                assert np.max(dist_band[np.asarray(ids)]) <= np.sort(dist_band)[B - 1] + 1e-7
        assert hits > 0

    def test_threshold_fewer_than_b_in_band_takes_nearest(self):
        sel, select = _select_fn("threshold")
        state = sel.init(jax.random.key(0))
        state = sel.update(state, jnp.arange(N, dtype=jnp.int32), jnp.full((N,), K, jnp.int32), K)
        state = jax.tree.map(lambda x: x * 50, state)  # very confident, near 1: nothing in band
        cand = jnp.arange(N, dtype=jnp.int32)
        key = jax.random.key(2)
        _, ids, _ = select(state, cand, key)
        g = np.asarray(_draws(state, cand, jax.random.split(key)[0], "fast"))
        assert ((g >= 0.3) & (g <= 0.7)).sum() < B
        assert np.max(g[np.asarray(ids)]) <= np.sort(g)[B - 1] + 1e-7  # the B draws closest to the band


def test_calibration_against_fresh_binomial_frequencies():
    """gamma ~ Beta(2, 2) (the prior), rounds of c ~ Bin(8, gamma): binned posterior means are calibrated."""
    P, rounds = 20000, 3
    rng = np.random.default_rng(0)
    gamma = rng.beta(2, 2, size=P)
    sel = make_mopps(P, 1, decay=1.0, alpha0=2.0, beta0=2.0)
    state = sel.init(jax.random.key(0))
    ids = jnp.arange(P, dtype=jnp.int32)
    update = jax.jit(sel.update, static_argnums=3)
    for _ in range(rounds):
        state = update(state, ids, jnp.asarray(rng.binomial(K, gamma), jnp.int32), K)
    mean = np.asarray(state.alpha_N / (state.alpha_N + state.beta_N))
    fresh = rng.binomial(K, gamma) / K
    bins = np.digitize(mean, np.linspace(0, 1, 11)[1:-1])
    for b in np.unique(bins):
        m = bins == b
        if m.sum() < 200:
            continue
        se = fresh[m].std() / np.sqrt(m.sum())
        assert abs(fresh[m].mean() - mean[m].mean()) < 4 * se + 1e-3, b


def test_prob_mixed_matches_monte_carlo():
    sel = make_mopps(4, 1)
    state = sel.init(jax.random.key(0))
    state = sel.update(state, jnp.arange(4), jnp.array([0, 3, 5, 8]), K)
    p = np.asarray(jax.jit(mopps_prob_mixed, static_argnums=2)(state, jnp.arange(4), K))
    rng = np.random.default_rng(0)
    g = rng.beta(np.asarray(state.alpha_N), np.asarray(state.beta_N), size=(100000, 4))
    c = rng.binomial(K, g)
    np.testing.assert_allclose(p, ((c > 0) & (c < K)).mean(0), atol=6e-3)  # MC sd <= 1.6e-3


def test_seen_capacity_option():
    """0 disables the prior-group fast path; None = min(2^18, N // 4) from N = 2^18 on; bad values raise."""
    assert make_mopps(N, B).init(None).seen_ids_C.shape == (1,)  # C = 0: one unused slot (orbax: no zero-size)
    assert make_mopps(1 << 18, B).init(None).seen_ids_C.shape == (1 << 16,)
    assert make_mopps(N, B, seen_capacity=10).init(None).seen_ids_C.shape == (10,)
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="seen_capacity"):
            make_mopps(N, B, seen_capacity=bad)
    with pytest.raises(ValueError, match="target"):
        make_mopps(N, B, target=1.5)
