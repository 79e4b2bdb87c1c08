"""Token-selection ops: inverse-CDF sampling, top-k / top-p masks, temperature, greedy, log-probs."""
import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.sampling import SamplingConfig, filter_logits, inverse_cdf_sample, select_tokens, top_p_threshold

_inverse_cdf = jax.jit(inverse_cdf_sample)
_top_p_threshold = jax.jit(top_p_threshold)


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_nucleus(p, top_p):
    """Reference nucleus keep-mask by sorting: shortest descending prefix with mass >= top_p."""
    order = np.argsort(-p, kind="stable")
    mass_before = np.cumsum(p[order]) - p[order]
    keep_sorted = mass_before < top_p * p.sum()
    keep = np.zeros_like(p, bool)
    keep[order[keep_sorted]] = True
    return keep


@settings(max_examples=15, deadline=None)
@given(w=hnp.arrays(np.int32, (3, 37), elements=st.integers(0, 50)),
       u=hnp.arrays(np.int32, (3,), elements=st.integers(0, 1023)))
def test_inverse_cdf_matches_searchsorted(w, u):
    """Integer weights and u on a 1/1024 grid make float32 sums exact: compare with numpy searchsorted."""
    w[:, 5] += 1  # at least one positive weight per row
    u = u.astype(np.float32) / 1024
    got = np.asarray(_inverse_cdf(jnp.asarray(w, jnp.float32), jnp.asarray(u)))
    cdf = np.cumsum(w, axis=-1)
    want = np.array([np.searchsorted(cdf[b], u[b] * cdf[b, -1], side="right") for b in range(3)])
    np.testing.assert_array_equal(got, want)
    assert (w[np.arange(3), got] > 0).all()


@settings(max_examples=15, deadline=None)
@given(w=hnp.arrays(np.float32, (4, 300), elements=st.floats(0, 1, width=32)),
       u=hnp.arrays(np.float32, (4,), elements=st.floats(0, 0.9999999403953552, width=32)))
def test_inverse_cdf_never_picks_zero_weight(w, u):
    w[:, -1] += 1e-3
    w[:, : 300 // 2] *= (np.arange(150) % 3 == 0)  # many exact zeros, incl. whole blocks
    got = np.asarray(_inverse_cdf(jnp.asarray(w), jnp.asarray(u)))
    assert (w[np.arange(4), got] > 0).all()


def test_inverse_cdf_frequencies_are_exact_on_a_grid():
    """u on a uniform grid of N points: each token is chosen N * p_j times, up to one per boundary."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(50)).astype(np.float32)
    n = 4096
    u = (np.arange(n, dtype=np.float32) + 0.5) / n
    got = np.asarray(_inverse_cdf(jnp.broadcast_to(jnp.asarray(p), (n, 50)), jnp.asarray(u)))
    counts = np.bincount(got, minlength=50)
    assert np.abs(counts - n * p).max() <= 1.5


@settings(max_examples=15, deadline=None)
@given(logits=hnp.arrays(np.float32, (3, 64), elements=st.floats(-5, 5, width=32)),
       top_p=st.floats(0.05, 0.99))
def test_top_p_threshold_matches_sort_reference(logits, top_p):
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    tau = np.asarray(_top_p_threshold(jnp.asarray(probs), jnp.float32(top_p)))
    for b in range(3):
        keep = probs[b] >= tau[b]
        ref = _np_nucleus(probs[b].astype(np.float64), top_p)
        # identical up to exact ties at the boundary value (kept by us, possibly not by the sort order)
        assert ref[keep].all() or np.isin(probs[b][keep & ~ref], probs[b][ref]).all()
        assert keep[ref].all()


class SelectTokensTest(parameterized.TestCase):
    """select_tokens under jit and without jit (chex variants)."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(1)
        self.logits = jnp.asarray(rng.normal(size=(256, 40)) * 2.0, jnp.float32)
        self.u = jnp.asarray(rng.uniform(size=256), jnp.float32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_greedy(self):
        cfg = SamplingConfig(max_new_tokens=1, greedy=True)
        tok, lp, lps = self.variant(lambda l, u: select_tokens(l, u, cfg))(self.logits, self.u)
        np.testing.assert_array_equal(tok, np.argmax(self.logits, -1))
        ref = _np_log_softmax(self.logits)[np.arange(256), np.asarray(tok)]
        np.testing.assert_allclose(lp, ref, atol=1e-5)
        np.testing.assert_array_equal(lps, 0.0)

    @chex.variants(with_jit=True)
    def test_temperature_logprobs(self):
        cfg = SamplingConfig(max_new_tokens=1, temperature=0.7)
        tok, lp, lps = self.variant(lambda l, u: select_tokens(l, u, cfg))(self.logits, self.u)
        idx = (np.arange(256), np.asarray(tok))
        np.testing.assert_allclose(lp, _np_log_softmax(self.logits)[idx], atol=1e-5)
        np.testing.assert_allclose(lps, _np_log_softmax(np.asarray(self.logits) / 0.7)[idx], atol=1e-5)
        # inverse CDF: token = searchsorted(cdf of the tempered distribution, u)
        p = np.exp(_np_log_softmax(np.asarray(self.logits) / 0.7))
        want = [np.searchsorted(np.cumsum(p[b]), self.u[b] * p[b].sum(), side="right") for b in range(256)]
        assert np.mean(np.asarray(tok) == np.array(want)) > 0.99  # float32 vs float64 boundary rounding

    @chex.variants(with_jit=True)
    def test_top_k_mask_and_logprobs(self):
        cfg = SamplingConfig(max_new_tokens=1, top_k=5, temperature=1.3)
        tok, lp, lps = self.variant(lambda l, u: select_tokens(l, u, cfg))(self.logits, self.u)
        top5 = np.argsort(-np.asarray(self.logits), -1)[:, :5]
        assert all(t in row for t, row in zip(np.asarray(tok), top5))
        z = np.asarray(self.logits) / 1.3
        zk = np.take_along_axis(z, top5, -1)
        ref_s = z[np.arange(256), tok] - np.log(np.exp(zk - zk.max(-1, keepdims=True)).sum(-1)) - zk.max(-1)
        np.testing.assert_allclose(lps, ref_s, atol=1e-5)
        np.testing.assert_allclose(lp, _np_log_softmax(self.logits)[np.arange(256), tok], atol=1e-5)
        assert len(np.unique(np.asarray(tok))) > 5  # not degenerate

    @chex.variants(with_jit=True)
    def test_top_p_mask(self):
        cfg = SamplingConfig(max_new_tokens=1, top_p=0.6)
        tok, _, lps = self.variant(lambda l, u: select_tokens(l, u, cfg))(self.logits, self.u)
        p = np.exp(_np_log_softmax(self.logits))
        for b in range(256):
            keep = _np_nucleus(p[b], 0.6)
            assert keep[int(tok[b])]
            np.testing.assert_allclose(lps[b], np.log(p[b, tok[b]] / p[b][keep].sum()), atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_top_k_then_top_p(self):
        cfg = SamplingConfig(max_new_tokens=1, top_k=8, top_p=0.5)
        z, ids = self.variant(lambda l: filter_logits(l, cfg))(self.logits)
        chex.assert_shape((z, ids), (256, 8))
        p = np.exp(_np_log_softmax(self.logits))
        for b in range(0, 256, 17):
            top8 = np.argsort(-p[b])[:8]
            keep_ref = _np_nucleus(p[b, top8], 0.5)
            np.testing.assert_array_equal(np.isfinite(np.asarray(z[b])), keep_ref)
            np.testing.assert_array_equal(np.sort(np.asarray(ids[b])), np.sort(top8))


def test_config_validation():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="empty pattern"):
        SamplingConfig(stop_sequences=((),))
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1.0)
    assert SamplingConfig(temperature=0.0).greedy
    assert hash(SamplingConfig(eos_ids=[1, 2])) == hash(SamplingConfig(eos_ids=(1, 2)))
