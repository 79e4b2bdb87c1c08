"""GPS test-time compute allocation (spec §7 item 16 and the greedy marginal-gain rule)."""
import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.selection.test_time import allocate_test_samples, expected_solved

_allocate = jax.jit(allocate_test_samples, static_argnames=("budget", "min_per_prompt", "max_per_prompt"))


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


def test_bad_inputs_raise():
    with np.testing.assert_raises_regex(ValueError, "1-D float"):
        allocate_test_samples(jnp.ones((2, 2)), 4)
    with np.testing.assert_raises_regex(ValueError, "NaN"):
        allocate_test_samples(jnp.asarray([0.5, jnp.nan]), 4)
    with np.testing.assert_raises_regex(ValueError, "below"):
        allocate_test_samples(jnp.asarray([0.5, 0.5]), 3, min_per_prompt=2)
    with np.testing.assert_raises_regex(ValueError, "exceeds"):
        allocate_test_samples(jnp.asarray([0.5, 0.5]), 5, max_per_prompt=2)


if __name__ == "__main__":
    absltest.main()
