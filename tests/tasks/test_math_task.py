"""math-verify rewards on hand examples."""
import pytest

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.math_task import extract_boxed, extract_math_answer, math_reward


@pytest.mark.parametrize("completion, gold, reward", [
    ("so the answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{0.5}", "\\frac12", 1.0),
    ("\\boxed{x^2 + 1}", "1 + x^2", 1.0),
    ("first \\boxed{3} then corrected: \\boxed{4}", "4", 1.0),    # last boxed counts
    ("first \\boxed{4} then \\boxed{3}", "4", 0.0),
    ("\\boxed{\\sqrt{2}}", "\\sqrt 2", 1.0),
    ("\\boxed{5}", "6", 0.0),
    ("<answer>42</answer>", "42", 1.0),                           # <answer> fallback
    ("the answer is 42", "42", 0.0),                              # no boxed / answer -> 0
    ("\\boxed{}", "42", 0.0),
    ("\\boxed{7", "7", 0.0),                                      # unbalanced
])
def test_math_reward_hand_examples(completion, gold, reward):
    assert math_reward(completion, Example(prompt="q", answer=gold)) == reward


def test_gold_may_be_a_full_solution():
    gold = "We compute ... so the result is $\\boxed{\\dfrac{3}{4}}$."
    assert math_reward("\\boxed{0.75}", Example(prompt="q", answer=gold)) == 1.0
    assert math_reward("\\boxed{0.7}", Example(prompt="q", answer=gold)) == 0.0


def test_extract_boxed_nested_braces():
    assert extract_boxed("a \\boxed{\\frac{1}{\\sqrt{2}}} b") == "\\frac{1}{\\sqrt{2}}"
    assert extract_boxed("\\fbox{3}") == "3"
    assert extract_boxed("none") is None
    assert extract_math_answer("<answer> 9 </answer>") == "9"
