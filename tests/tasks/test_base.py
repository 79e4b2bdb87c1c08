"""Example record and fault-tolerant scoring."""
import math
import pickle

import numpy as np
import pytest

from lpo_jax.tasks.base import Example, exact_match_reward, score_completions


def _examples(n):
    return [Example(prompt=f"p{i}", answer=str(i), uid=i) for i in range(n)]


def test_example_is_frozen_and_meta_read_only():
    ex = Example(prompt="q", answer="a", meta={"nums": (1, 2)}, uid=3)
    with pytest.raises(Exception):
        ex.prompt = "other"
    with pytest.raises(TypeError):
        ex.meta["nums"] = (3,)
    again = pickle.loads(pickle.dumps(ex))
    assert again == ex and dict(again.meta) == {"nums": (1, 2)}


def test_example_rejects_non_string_answer():
    with pytest.raises(TypeError, match="str"):
        Example(prompt="q", answer=3)


def test_score_completions_plain():
    rewards, stats = score_completions(exact_match_reward, ["0", " 1 ", "x"], _examples(3))
    assert rewards.dtype == np.float32
    np.testing.assert_array_equal(rewards, [1.0, 1.0, 0.0])
    assert (stats.n, stats.n_errors, stats.n_nonfinite, stats.first_error) == (3, 0, 0, None)


def test_raising_and_nonfinite_rewards_are_zeroed_and_counted():
    def flaky(completion, example):
        if completion == "boom":
            raise RuntimeError("reward server down")
        if completion == "nan":
            return math.nan
        if completion == "inf":
            return -math.inf
        if completion == "str":
            return "not a number"
        return 0.5

    comps = ["ok", "nan", "boom", "inf", "boom", "str"]
    rewards, stats = score_completions(flaky, comps, _examples(6))
    np.testing.assert_array_equal(rewards, [0.5, 0, 0, 0, 0, 0])
    assert stats.n_errors == 2 and stats.n_nonfinite == 3 and stats.n_failed == 5
    assert stats.first_error == "non-finite reward nan (sample 1)"
    _, stats3 = score_completions(flaky, ["str"], _examples(1))
    assert stats3.first_error == "non-finite reward 'not a number' (sample 0)" and stats3.n_nonfinite == 1
    _, stats2 = score_completions(flaky, ["boom", "nan"], _examples(2))
    assert stats2.first_error == "RuntimeError: reward server down (sample 0)"
    assert np.all(np.isfinite(rewards))


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="one example per completion"):
        score_completions(exact_match_reward, ["a", "b"], _examples(1))
