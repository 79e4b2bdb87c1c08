"""The exact Beta/Gamma sampler behind MoPPS's Thompson draws (`_random`): its distribution.

The sampler runs Marsaglia-Tsang proposal rounds over the whole array, then gathers the few still-rejected
entries and redraws them until accepted; shapes below 1 take the U^(1/a) boost. The tests use array layouts
with the target parameters dense or sparse among Beta(1, 1) entries and compare the draws with numpyro's
exact Beta CDF (KS test) and moments.
Shapes are fixed so everything compiles once; hypothesis varies the parameters (derandomized, fixed keys:
the outcome is deterministic, the KS threshold 1e-4 is loose enough for several examples).
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lpo_jax.selection import _random
from lpo_jax.selection.mopps import make_mopps, thompson_draws

SIZE, TARGET = 1 << 15, 3000
_beta = jax.jit(_random.beta_sample)
_draws = jax.jit(thompson_draws, static_argnums=3)
# Shapes >= 0.3: below that a visible share of the mass lies within float32 resolution of 0 or 1 (for
# Beta(1, b), P(1 - x < 3e-8) = (3e-8)^b: 4% at b = 0.19), which any float32 sampler must round.
params = st.floats(0.3, 60.0, allow_nan=False, allow_infinity=False)


def _layout(a, b, sparse):
    """(alpha, beta) arrays: TARGET entries at (a, b); the rest at the Beta(1, 1) prior (sparse) or also (a, b)."""
    alpha = np.full(SIZE, 1.0 if sparse else a, np.float32)
    beta = np.full(SIZE, 1.0 if sparse else b, np.float32)
    where = np.arange(0, SIZE, SIZE // TARGET)[:TARGET]  # spread over the array: rejects are gathered from all over
    alpha[where], beta[where] = a, b
    return jnp.asarray(alpha), jnp.asarray(beta), where


def _assert_beta(x, a, b):
    cdf = lambda v: np.asarray(dist.Beta(a, b).cdf(jnp.asarray(v, jnp.float32)))  # noqa: E731
    assert stats.kstest(x, cdf).pvalue > 1e-4, (a, b)
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / x.size) + 1e-6, (a, b, x.mean(), mean)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(a=params, b=params, sparse=st.booleans())
def test_beta_draws_match_numpyro_beta(a, b, sparse):
    """Target parameters dense (the whole array) or sparse among Beta(1, 1) entries."""
    alpha, beta, where = _layout(a, b, sparse)
    x = np.asarray(_beta(jax.random.key(7), alpha, beta))
    assert np.all((x >= 0) & (x <= 1)) and np.isfinite(x).all()
    _assert_beta(x[where], a, b)
    if sparse:  # the Beta(1, 1) prompts: uniform draws by the closed form, independent of the others
        rest = np.setdiff1d(np.arange(SIZE), where)
        assert stats.kstest(x[rest], "uniform").pvalue > 1e-4
        assert abs(np.corrcoef(x[rest][:-1], x[rest][1:])[0, 1]) < 0.03


def test_closed_form_and_boost_paths():
    """Shapes exactly 1, below 1 (boost) and above 1, all in one array; the MoPPS draws
    (sampler="fast") are these draws."""
    a = jnp.repeat(jnp.array([1.0, 0.4, 7.5, 1.0]), SIZE // 8)
    b = jnp.repeat(jnp.array([3.0, 1.0, 0.6, 1.0]), SIZE // 8)
    ours = np.asarray(jax.jit(_random.beta_sample)(jax.random.key(3), a, b)).reshape(4, -1)
    state = make_mopps(SIZE // 2, 8).init(jax.random.key(0)).replace(alpha_N=a, beta_N=b)
    ids = jnp.arange(SIZE // 2, dtype=jnp.int32)
    key = jax.random.key(4)
    via_mopps = np.asarray(_draws(state, ids, key, "fast"))
    np.testing.assert_allclose(via_mopps, np.asarray(_beta(key, a, b)), rtol=1e-6)  # same draws (jit-to-jit)
    for i, (ai, bi) in enumerate([(1.0, 3.0), (0.4, 1.0), (7.5, 0.6), (1.0, 1.0)]):
        _assert_beta(ours[i], ai, bi)


def test_deterministic_given_key_and_different_across_keys():
    alpha, beta, _ = _layout(2.5, 4.0, True)
    x1, x2 = _beta(jax.random.key(1), alpha, beta), _beta(jax.random.key(1), alpha, beta)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    assert np.mean(np.asarray(x1) == np.asarray(_beta(jax.random.key(2), alpha, beta))) < 1e-3
