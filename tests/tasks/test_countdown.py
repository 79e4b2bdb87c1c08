"""Countdown reward on hand examples, evaluator safety, generator and record loading."""
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.countdown import (UnsafeExpressionError, check_equation, countdown_examples, countdown_prompt,
                                     countdown_reward, extract_answer, generate_countdown_records,
                                     parse_expression)


def _ex(nums, target):
    return countdown_examples([{"nums": nums, "target": target}])[0]


@pytest.mark.parametrize("completion, reward", [
    ("reasoning</think>\n<answer>(3 + 5) * 2</answer>", 1.0),      # 16
    ("<answer>2 * (5 + 3)</answer>", 1.0),
    ("<answer>(3+5)*2 = 16</answer>", 1.0),                       # "expr = value" form
    ("<answer>wrong</answer> then <answer>5*3+2</answer>", 0.1),  # last block counts: 17
    ("<answer>(3 + 5) * 2 * 1</answer>", 0.1),                    # extra number
    ("<answer>(3 + 3) * 2</answer>", 0.1),                        # 3 reused, 5 unused
    ("<answer>3 + 5</answer>", 0.1),                              # number missing
    ("<answer>(3 + 5) ** 2</answer>", 0.1),                       # ** not allowed
    ("<answer>2 / (5 - 5) + 3</answer>", 0.1),                    # malformed: 5 twice, division by zero
    ("(3 + 5) * 2", 0.0),                                         # no answer block
    ("<answer>(3 + 5) * 2", 0.0),                                 # unclosed block
])
def test_countdown_reward_hand_examples(completion, reward):
    assert countdown_reward(completion, _ex([3, 5, 2], 16)) == reward


def test_exact_rational_arithmetic():
    assert check_equation("8 / 3 * 3", [8, 3, 3], 8)            # float arithmetic would give 7.999...
    assert check_equation("(6 - 2) / 4 * 7", [6, 2, 4, 7], 7)
    assert not check_equation("7 / 2", [7, 2], 3)               # 3.5, no rounding
    assert not check_equation("5 / (3 - 3)", [5, 3, 3], 1)      # division by zero -> wrong, no crash


def test_evaluator_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    attacks = [
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w').write('x')",
        "(lambda: 1)()",
        "[1, 2][0] + 1",
        "x + 1",
        "(1).__class__",
        "2 ** 10 ** 10",                 # would hang if evaluated
        "-3 + 5",                        # unary operators are rejected too
        "1.5 * 2",                       # only integer literals
        "True + 1",
        "1 if 1 else 2",
        "(" * 300 + "1" + ")" * 300,
        "1 +\x00 2",
    ]
    for text in attacks:
        with pytest.raises(UnsafeExpressionError):
            parse_expression(text)
        reward = countdown_reward(f"<answer>{text}</answer>", _ex([1, 2], 3))
        assert reward == 0.1, text
    assert not marker.exists()
    assert not os.path.exists(str(marker))


def test_extract_answer_takes_last_block():
    assert extract_answer("<answer> 1 </answer> x <answer>\n2+3\n</answer>") == "2+3"
    assert extract_answer("no tags") is None


def test_prompt_styles():
    base = countdown_prompt([1, 2, 3], 6, "base")
    chat = countdown_prompt([1, 2, 3], 6, "chat")
    assert base.endswith("<think>") and "[1, 2, 3]" in base and "equals 6" in base
    assert chat in base and not chat.endswith("<think>") and "Assistant" not in chat
    with pytest.raises(ValueError, match="style"):
        countdown_prompt([1], 1, "other")


def test_generator_is_seeded_and_every_problem_is_solvable():
    recs = generate_countdown_records(64, seed=3, num_numbers=(3, 4))
    assert recs == generate_countdown_records(64, seed=3, num_numbers=(3, 4))
    assert recs != generate_countdown_records(64, seed=4, num_numbers=(3, 4))
    for rec in recs:
        assert 3 <= len(rec["nums"]) <= 4 and 1 <= rec["target"] <= 100
        assert all(1 <= n <= 99 for n in rec["nums"])
        assert check_equation(rec["solution"], rec["nums"], rec["target"]), rec
        ex = countdown_examples([rec])[0]
        assert countdown_reward(f"<answer>{rec['solution']}</answer>", ex) == 1.0


def test_records_need_target_and_nums():
    exs = countdown_examples([{"target": 10, "nums": [1, 9]}, {"target": 4, "nums": [2, 2]}], start_uid=5)
    assert [e.uid for e in exs] == [5, 6] and exs[1].meta["nums"] == (2, 2)
    with pytest.raises(ValueError, match="'target' and 'nums'"):
        countdown_examples([{"target": 1, "numbers": [1]}])
    assert isinstance(exs[0], Example)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="0123456789+-*/() .=_abx'[]:,", max_size=40))
def test_arbitrary_answers_never_raise_and_score_in_the_reward_set(text):
    assert countdown_reward(f"<answer>{text}</answer>", _ex([3, 5, 2], 16)) in (0.1, 1.0)
    try:
        parse_expression(text)
    except UnsafeExpressionError:
        pass
