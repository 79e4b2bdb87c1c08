"""GPS test-time compute allocation (spec §7 item 16, the greedy marginal-gain rule) and its calibration [ours]."""
import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.selection.test_time import (allocate_test_samples, expected_solved, fit_logit_calibration,
                                         logit_normal_log_marginal, logit_normal_nodes)

_allocate = jax.jit(allocate_test_samples, static_argnames=("budget", "min_per_prompt", "max_per_prompt"))
_fit = jax.jit(fit_logit_calibration)


class AllocatorVariantsTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_spends_exactly_the_budget_and_prefers_intermediate(self):
        pred = jnp.asarray([0.99, 0.5, 0.3, 0.0, 0.97, 0.05], jnp.float32)
        alloc = self.variant(functools.partial(allocate_test_samples, budget=24))(pred)
        alloc = np.asarray(alloc)
        assert alloc.sum() == 24 and alloc.dtype == np.int32 and (alloc >= 0).all()
        # challenging-but-solvable (0.3, 0.5) get more than trivially easy (0.99, 0.97) and than unsolvable (0.0)
        assert min(alloc[1], alloc[2]) > max(alloc[0], alloc[4])
        assert alloc[2] > alloc[1] > alloc[0] and alloc[3] == 0


@settings(max_examples=30, deadline=None, derandomize=True)
@given(pred=st.lists(st.floats(0.0, 1.0, width=32), min_size=8, max_size=8),
       budget=st.sampled_from([0, 1, 13, 40]), min_per=st.sampled_from([0, 1]),
       max_per=st.sampled_from([None, 5, 9]))
def test_budget_spent_exactly_and_bounds_respected(pred, budget, min_per, max_per):
    if budget < 8 * min_per or (max_per is not None and budget > 8 * max_per):
        with np.testing.assert_raises(ValueError):
            allocate_test_samples(jnp.asarray(pred), budget, min_per_prompt=min_per, max_per_prompt=max_per)
        return
    alloc = np.asarray(_allocate(jnp.asarray(pred, jnp.float32), budget=budget, min_per_prompt=min_per,
                                 max_per_prompt=max_per))
    assert alloc.sum() == budget
    assert (alloc >= min_per).all() and (max_per is None or (alloc <= max_per).all())


def test_greedy_is_optimal_for_the_expected_solved_objective():
    """Concave separable gains: greedy equals the brute-force best allocation (ties give equal value)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = rng.uniform(size=3).astype(np.float32)
        budget = 7
        alloc = np.asarray(_allocate(jnp.asarray(pred), budget=budget))
        best = max(expected_solved(pred.astype(np.float64), np.asarray(a))
                   for a in itertools.product(range(budget + 1), repeat=3) if sum(a) == budget)
        np.testing.assert_allclose(float(expected_solved(pred.astype(np.float64), alloc)), float(best), rtol=1e-6)


def test_predictive_nodes_generalise_point_predictions():
    """[P, 1] nodes = the point prediction; a two-point mixture is scored and allocated exactly (brute force)."""
    pred = jnp.asarray([0.9, 0.4, 0.1, 0.6], jnp.float32)
    np.testing.assert_array_equal(np.asarray(_allocate(pred[:, None], budget=11)),
                                  np.asarray(_allocate(pred, budget=11)))
    # prompt 0: rate 0.5 for sure; prompt 1: 0 or 1 with probability 1/2 each (same mean, far fewer useful samples)
    nodes, weights = jnp.asarray([[0.5, 0.5], [0.0, 1.0], [0.3, 0.3]]), jnp.asarray([0.5, 0.5])
    alloc = np.asarray(_allocate(nodes, budget=7, weights_S=weights))
    nodes64, weights64 = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    value = lambda a: float(((1 - (1 - nodes64) ** np.asarray(a)[:, None]) @ weights64).sum())  # noqa: E731
    best = max(value(a) for a in itertools.product(range(8), repeat=3) if sum(a) == 7)
    np.testing.assert_allclose(float(expected_solved(nodes, jnp.asarray(alloc), weights)), best, rtol=1e-6)
    assert alloc.sum() == 7 and alloc[1] == 1  # one sample settles the all-or-nothing prompt


def test_logit_normal_marginal_matches_monte_carlo():
    rng = np.random.default_rng(0)
    gamma = 1.0 / (1.0 + np.exp(-(-0.7 + 1.8 * rng.normal(size=400_000))))
    for c in (0, 3, 8):
        mc = np.mean(np.exp(np.log(gamma) * c + np.log1p(-gamma) * (8 - c))) * math.comb(8, c)
        exact = float(jnp.exp(logit_normal_log_marginal(jnp.float32(-0.7), 1.8, jnp.float32(c), jnp.float32(8))))
        assert exact == pytest.approx(mc, rel=0.01)


def _overconfident_history(rng, size, scale=0.4, bias=-0.5, sd=1.0):
    """Point predictor p = sigmoid(m), m ~ N(0, 3^2); truth logit g = scale m + bias + sd eps: p is
    over-confident (true scale 0.4) and ignores prompt-level spread."""
    m = rng.normal(0.0, 3.0, size)
    gamma = 1.0 / (1.0 + np.exp(-(scale * m + bias + sd * rng.normal(size=size))))
    return (1.0 / (1.0 + np.exp(-m))).astype(np.float32), gamma


def test_calibration_recovers_the_truth_and_is_calibrated_on_fresh_prompts():
    rng = np.random.default_rng(1)
    p, gamma = _overconfident_history(rng, 2000)
    cal = _fit(jnp.asarray(p), jnp.asarray(rng.binomial(8, gamma)), 8.0)
    assert float(cal.scale) == pytest.approx(0.4, abs=0.06)
    assert float(cal.bias) == pytest.approx(-0.5, abs=0.12)
    assert float(cal.sd) == pytest.approx(1.0, abs=0.2)
    assert float(cal.num_observations) == 2000
    p_new, gamma_new = _overconfident_history(rng, 2000)
    nodes, weights = logit_normal_nodes(jnp.asarray(p_new), cal)
    predicted = np.asarray(nodes @ weights)
    fresh = rng.binomial(8, gamma_new) / 8
    raw_errors = []
    for lo, hi in ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75)):  # binned predictive means match fresh outcomes
        in_bin = (predicted >= lo) & (predicted < hi)
        stderr = np.sqrt(0.25 / in_bin.sum())
        assert abs(predicted[in_bin].mean() - fresh[in_bin].mean()) < 3 * stderr + 0.02, (lo, hi)
        raw_errors.append(abs(p_new[in_bin].mean() - fresh[in_bin].mean()))
    assert max(raw_errors) > 0.1  # while the raw predictor is not calibrated on the same bins
    # and it pays at test time: calibrated allocation beats uniform, which beats the over-confident raw one
    budget, limits, P = 4 * 2000, dict(min_per_prompt=1, max_per_prompt=16), 2000
    solved = lambda alloc: float(expected_solved(jnp.asarray(gamma_new), alloc)) / P  # noqa: E731
    calibrated = solved(_allocate(nodes, budget=budget, weights_S=weights, **limits))
    uniform = solved(jnp.full((P,), 4))
    raw = solved(_allocate(jnp.asarray(p_new), budget=budget, **limits))
    assert calibrated > uniform + 0.005 and uniform > raw + 0.01, (calibrated, uniform, raw)


def test_uninformative_predictions_fall_back_to_uniform_allocation():
    rng = np.random.default_rng(2)
    p = (1.0 / (1.0 + np.exp(-rng.normal(0.0, 3.0, 2000)))).astype(np.float32)  # unrelated to the outcomes
    gamma = 1.0 / (1.0 + np.exp(-(-0.5 + 2.0 * rng.normal(size=2000))))
    cal = _fit(jnp.asarray(p), jnp.asarray(rng.binomial(8, gamma)), 8.0)
    assert abs(float(cal.scale)) < 0.05 and float(cal.sd) == pytest.approx(2.0, abs=0.3)
    nodes, weights = logit_normal_nodes(jnp.asarray(p[:200]), cal)
    alloc = np.asarray(_allocate(nodes, budget=800, weights_S=weights, min_per_prompt=1, max_per_prompt=16))
    assert alloc.min() >= 3 and alloc.max() <= 5  # near-uniform (4 each)


def test_bad_inputs_raise():
    with np.testing.assert_raises_regex(ValueError, "1-D float"):
        allocate_test_samples(jnp.ones((2, 2, 2)), 4)  # [P] rates or [P, S] nodes only
    with np.testing.assert_raises_regex(ValueError, "NaN"):
        allocate_test_samples(jnp.asarray([0.5, jnp.nan]), 4)
    with np.testing.assert_raises_regex(ValueError, "below"):
        allocate_test_samples(jnp.asarray([0.5, 0.5]), 3, min_per_prompt=2)
    with np.testing.assert_raises_regex(ValueError, "exceeds"):
        allocate_test_samples(jnp.asarray([0.5, 0.5]), 5, max_per_prompt=2)
    with np.testing.assert_raises_regex(ValueError, "weights"):
        allocate_test_samples(jnp.ones((3, 2)) / 2, 4, weights_S=jnp.ones(3) / 3)
    with np.testing.assert_raises_regex(ValueError, "weights"):
        allocate_test_samples(jnp.ones((3,)) / 2, 4, weights_S=jnp.ones(1))


if __name__ == "__main__":
    absltest.main()
