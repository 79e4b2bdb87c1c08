"""avg@k / pass@k against hand computations."""
import math

import numpy as np
import pytest

from lpo_jax.eval import avg_at_k, pass_at_k


def test_avg_at_k_is_mean_success():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert avg_at_k(correct) == pytest.approx(6 / 12)


def test_pass_at_k_matches_combinatorial_formula():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]])
    for k in (1, 2, 3, 4):
        expected = np.mean([1 - math.comb(4 - int(c), k) / math.comb(4, k) for c in correct.sum(1)])
        assert pass_at_k(correct, k) == pytest.approx(expected)
    assert pass_at_k(correct, 1) == pytest.approx(avg_at_k(correct))
    assert pass_at_k(correct, 4) == pytest.approx(3 / 4)


def test_bad_shapes_and_k_raise():
    with pytest.raises(ValueError, match="shape"):
        avg_at_k(np.ones(3))
    with pytest.raises(ValueError, match="k <= samples"):
        pass_at_k(np.ones((2, 3)), 4)
