"""GPS greedy max-sum acquisition (spec §7 item 15) against numpy references."""
import functools

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.selection import acquisition as acq

_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
_greedy = jax.jit(acq.greedy_max_sum, static_argnames=("batch_size",))  # one compile per (M, B)
_hist_mean = jax.jit(acq.history_distance)
_hist_rms = jax.jit(acq.history_rms_distance)


def _problem(seed, num_candidates=40, dim=5, num_hist=12):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(num_candidates, dim)).astype(np.float32)
    pred = rng.uniform(size=num_candidates).astype(np.float32)
    hist = rng.normal(size=(num_hist, dim)).astype(np.float32)
    return e, pred, hist


def _np_dist(a, b):
    return np.linalg.norm(a[:, None, :].astype(np.float64) - b[None, :, :], axis=-1)


def _np_objective(u, e, hist_dist, subset, batch_size, lam):
    """U(S) straight from the spec's definition (float64 numpy)."""
    subset = list(subset)
    pairs = [(i, j) for a, i in enumerate(subset) for j in subset[a + 1:]]
    d_intra = 2.0 / (batch_size * (batch_size - 1)) * sum(np.linalg.norm(e[i] - e[j]) for i, j in pairs)
    d_inter = sum(hist_dist[i] for i in subset) / batch_size
    return sum(u[i] for i in subset) + lam * (d_intra + d_inter)


def _naive_greedy(u, e, hist_dist, batch_size, lam):
    """Greedy on U(S) itself: add the candidate maximising U(S + c) - U(S), recomputed from scratch."""
    u, e, hist_dist = (np.asarray(x, np.float64) for x in (u, e, hist_dist))
    chosen = []
    for _ in range(batch_size):
        base = _np_objective(u, e, hist_dist, chosen, batch_size, lam)
        gains = [-np.inf if c in chosen else _np_objective(u, e, hist_dist, chosen + [c], batch_size, lam) - base
                 for c in range(len(u))]
        chosen.append(int(np.argmax(gains)))
    return chosen


class GreedyVariantsTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_lambda_zero_is_top_b_by_utility(self):
        e, pred, hist = _problem(0)
        u = acq.success_utility(jnp.asarray(pred))
        hist_dist = acq.history_distance(jnp.asarray(e), jnp.asarray(hist), jnp.ones(len(hist), bool))
        greedy = self.variant(functools.partial(acq.greedy_max_sum, batch_size=8, lambda_div=0.0))
        result = greedy(u, jnp.asarray(e), hist_dist)
        expected = np.argsort(-np.asarray(u), kind="stable")[:8]
        np.testing.assert_array_equal(np.asarray(result.selected_B), expected)  # pick order = descending u

    @chex.variants(with_jit=True, without_jit=True)
    def test_running_sums_equal_naive_recomputation(self):
        e, pred, hist = _problem(1)
        u = acq.success_utility(jnp.asarray(pred))
        hist_dist = acq.history_distance(jnp.asarray(e), jnp.asarray(hist), jnp.ones(len(hist), bool))
        greedy = self.variant(functools.partial(acq.greedy_max_sum, batch_size=8, lambda_div=0.7))
        result = greedy(u, jnp.asarray(e), hist_dist)
        sel = np.asarray(result.selected_B)
        naive = _np_dist(e, e[sel]).sum(axis=1)
        np.testing.assert_allclose(np.asarray(result.intra_dist_sum_M), naive, rtol=1e-4, atol=1e-4)


def test_greedy_matches_naive_greedy_on_the_objective():
    for seed in range(2):
        e, pred, hist = _problem(seed, dim=3, num_hist=6)
        u = acq.success_utility(jnp.asarray(pred))
        valid = jnp.asarray([True] * 4 + [False] * 2)
        hist_dist = _hist_mean(jnp.asarray(e), jnp.asarray(hist), valid)
        for lam in (0.0, 0.3, 5.0):
            fast = _greedy(u, jnp.asarray(e), hist_dist, batch_size=8, lambda_div=jnp.float32(lam)).selected_B
            assert np.asarray(fast).tolist() == _naive_greedy(u, e, hist_dist, 8, lam), (seed, lam)


def test_large_lambda_disperses_at_least_as_much_as_top_b():
    """Spec property: with large lambda_div the batch's mean pairwise distance is >= the top-B batch's."""
    for seed in range(8):
        e, pred, _ = _problem(seed, dim=6)
        u = acq.success_utility(jnp.asarray(pred))
        zero = jnp.zeros(40)
        top = _greedy(u, jnp.asarray(e), zero, batch_size=8, lambda_div=jnp.float32(0.0)).selected_B
        spread = _greedy(u, jnp.asarray(e), zero, batch_size=8, lambda_div=jnp.float32(1e3)).selected_B
        d_top, d_spread = (_np_dist(e[np.asarray(s)], e[np.asarray(s)]).sum() / (8 * 7) for s in (top, spread))
        assert d_spread >= d_top, (seed, d_spread, d_top)
        assert d_spread > 1.2 * d_top  # and clearly more dispersed, not just equal


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch_size=st.sampled_from([1, 8, 40]), ties=st.booleans(),
       lam=st.sampled_from([0.0, 1.0, 1e4]))
def test_no_duplicates_and_valid_indices(seed, batch_size, ties, lam):
    rng = np.random.default_rng(seed)
    num_candidates = 40
    e = rng.normal(size=(num_candidates, 3)).astype(np.float32)
    u = rng.uniform(size=num_candidates).astype(np.float32)
    if ties:  # identical utilities and duplicated embeddings must still give distinct picks
        u[:] = 0.25
        e[:] = e[0]
    result = _greedy(jnp.asarray(u), jnp.asarray(e), jnp.zeros(num_candidates), batch_size=batch_size,
                     lambda_div=jnp.float32(lam))
    sel = np.asarray(result.selected_B)
    assert sel.shape == (batch_size,) and len(set(sel.tolist())) == batch_size
    assert sel.min() >= 0 and sel.max() < num_candidates


@_SETTINGS
@given(e=hnp.arrays(np.float32, (7, 3), elements=st.floats(-10, 10, width=32)),
       h=hnp.arrays(np.float32, (2, 4, 3), elements=st.floats(-10, 10, width=32)),
       valid=st.lists(st.booleans(), min_size=2, max_size=2))
def test_history_distances_match_numpy(e, h, valid):
    valid = np.asarray(valid)
    hist_mean = _hist_mean(jnp.asarray(e), jnp.asarray(h.reshape(8, 3)), jnp.asarray(np.repeat(valid, 4)))
    hist_rms = _hist_rms(jnp.asarray(e), jnp.asarray(h), jnp.asarray(valid))
    d = np.stack([_np_dist(e, h[w]) for w in range(2)], axis=1)  # [M, W, B]
    if valid.any():
        ref_mean = d[:, valid].mean(axis=(1, 2))
        ref_rms = np.sqrt((d[:, valid] ** 2).mean(axis=2)).mean(axis=1)
    else:
        ref_mean = ref_rms = np.zeros(7)
    np.testing.assert_allclose(np.asarray(hist_mean), ref_mean, rtol=2e-3, atol=5e-2)  # Gram form at |e|~17
    np.testing.assert_allclose(np.asarray(hist_rms), ref_rms, rtol=2e-3, atol=5e-2)


def test_objective_and_errors():
    e, pred, hist = _problem(3, dim=2)
    u = acq.success_utility(jnp.asarray(pred))
    hd = jnp.asarray(np.arange(40, dtype=np.float32))
    subset = [0, 2, 5, 11, 39]
    ref = _np_objective(np.asarray(u, np.float64), e, np.asarray(hd), subset, 8, 2.0)
    got = acq.max_sum_objective(u, jnp.asarray(e), hd, jnp.asarray(subset), 8, 2.0)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)
    np.testing.assert_allclose(float(acq.mean_pairwise_distance(jnp.asarray(e[subset]))),
                               _np_dist(e[subset], e[subset]).sum() / 20, rtol=1e-5)
    with np.testing.assert_raises_regex(ValueError, "batch_size=41"):
        acq.greedy_max_sum(u, jnp.asarray(e), hd, 41, 1.0)
    with np.testing.assert_raises(AssertionError):  # chex rank check: embeddings must be [M, d]
        acq.greedy_max_sum(u, jnp.asarray(e[:, 0]), hd, 2, 1.0)


if __name__ == "__main__":
    absltest.main()
