"""Countdown: combine the given numbers with + - * / to reach a target (TinyZero-style).

Reward (Jiayi-Pan/TinyZero convention, used by the LPO / DPS papers):
  1.0  the last ``<answer>...</answer>`` holds an expression that uses every given number exactly
       once and evaluates exactly (rational arithmetic) to the target;
  0.1  an ``<answer>...</answer>`` block exists but its content is wrong or unparsable;
  0.0  no answer block.

Safety: the expression is parsed with `ast` and evaluated by a tiny interpreter that accepts only
integer literals, the binary operators + - * / and parentheses. Names, calls, attributes,
subscripts, unary operators, ** and everything else are rejected, so no code ever runs.
"""
from __future__ import annotations

import ast
import fractions
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lpo_jax.tasks.base import Example

FORMAT_REWARD = 0.1
MAX_EXPRESSION_CHARS = 256
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,  # Fraction / Fraction (ZeroDivisionError handled by caller)
}

BASE_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question and the Assistant "
    "solves it: it first reasons step by step inside <think> </think> tags and then gives the "
    "final answer inside <answer> </answer> tags.\n"
    "User: {question}\nAssistant: Let me solve this step by step.\n<think>"
)
QUESTION_TEMPLATE = (
    "Using the numbers {nums}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number must be used exactly once. Show your "
    "reasoning in <think> </think> tags and return the final equation in <answer> </answer> "
    "tags, for example <answer> (1 + 2) / 3 </answer>."
)


class UnsafeExpressionError(ValueError):
    """The answer is not a plain arithmetic expression over integer literals."""


def parse_expression(text: str) -> ast.Expression:
    """Parses `text` and checks that only integers, + - * / and parentheses occur."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise UnsafeExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:  # ValueError: null bytes
        raise UnsafeExpressionError(f"not an arithmetic expression: {exc}") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.BinOp)) or type(node) in _BINOPS:
            continue
        if isinstance(node, ast.Constant) and type(node.value) is int:
            continue
        raise UnsafeExpressionError(f"disallowed syntax {type(node).__name__}")
    return tree


def expression_numbers(tree: ast.Expression) -> list[int]:
    """Integer literals of a parsed expression, in order."""
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]


def evaluate_expression(tree: ast.Expression) -> fractions.Fraction:
    """Exact value of a tree accepted by `parse_expression` (may raise ZeroDivisionError)."""

    def ev(node):
        if isinstance(node, ast.Constant):
            return fractions.Fraction(node.value)
        return _BINOPS[type(node.op)](ev(node.left), ev(node.right))

    return ev(tree.body)


def extract_answer(completion: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` block, or None."""
    found = _ANSWER_RE.findall(completion)
    return found[-1].strip() if found else None


def check_equation(expression: str, nums: Sequence[int], target: int) -> bool:
    """True iff `expression` uses each of `nums` exactly once and equals `target` exactly.

    An ``expr = value`` form is accepted: only the left-hand side is evaluated.
    """
    if expression.count("=") == 1:
        expression = expression.split("=")[0]
    try:
        tree = parse_expression(expression)
    except UnsafeExpressionError:
        return False
    if sorted(expression_numbers(tree)) != sorted(int(n) for n in nums):
        return False  # checked before evaluation: only the given numbers are ever multiplied
    try:
        return evaluate_expression(tree) == int(target)
    except ZeroDivisionError:
        return False


def countdown_reward(completion: str, example: Example) -> float:
    """1.0 correct equation, 0.1 answer block present but wrong, 0.0 no answer (see module doc)."""
    expression = extract_answer(completion)
    if expression is None:
        return 0.0
    ok = check_equation(expression, example.meta["nums"], example.meta["target"])
    return 1.0 if ok else FORMAT_REWARD


def countdown_prompt(nums: Sequence[int], target: int, style: str = "base") -> str:
    """The prompt text: "base" (TinyZero completion format, ends with "<think>") or "chat"
    (only the question, for a tokenizer chat template to wrap)."""
    question = QUESTION_TEMPLATE.format(nums=list(int(n) for n in nums), target=int(target))
    if style == "base":
        return BASE_TEMPLATE.format(question=question)
    if style == "chat":
        return question
    raise ValueError(f"countdown prompt style must be 'base' or 'chat', got {style!r}")


def countdown_examples(
    records: Iterable[Mapping[str, Any]], *, style: str = "base", start_uid: int = 0
) -> list[Example]:
    """Examples from Jiayi-Pan/Countdown-Tasks-3to4-style records with fields `target`, `nums`."""
    out = []
    for i, rec in enumerate(records):
        if "target" not in rec or "nums" not in rec:
            raise ValueError(
                f"countdown record {i} needs fields 'target' and 'nums', has {sorted(rec)}; "
                "map your columns to these names first"
            )
        nums = tuple(int(n) for n in rec["nums"])
        target = int(rec["target"])
        out.append(
            Example(
                prompt=countdown_prompt(nums, target, style),
                answer="",
                meta={"nums": nums, "target": target},
                uid=start_uid + i,
            )
        )
    return out


def generate_countdown_records(
    n: int,
    *,
    seed: int,
    num_numbers: tuple[int, int] = (3, 4),
    max_number: int = 99,
    max_target: int = 100,
) -> list[dict[str, Any]]:
    """`n` solvable problems {"target", "nums", "solution"}, deterministic in `seed`.

    Numbers are drawn uniformly from [1, max_number] (count uniform in `num_numbers`, inclusive);
    a random expression over all of them, combined in random order with random operators (a
    division only when exact), gives the target, kept when it is an integer in [1, max_target].
    """
    lo, hi = num_numbers
    if not 2 <= lo <= hi:
        raise ValueError(f"num_numbers must satisfy 2 <= lo <= hi, got {num_numbers}")
    rng = np.random.default_rng(seed)
    records: list[dict[str, Any]] = []
    while len(records) < n:
        count = int(rng.integers(lo, hi + 1))
        nums = [int(x) for x in rng.integers(1, max_number + 1, size=count)]
        terms = [(fractions.Fraction(x), str(x)) for x in nums]
        while len(terms) > 1:
            i, j = rng.choice(len(terms), size=2, replace=False)
            (a, sa), (b, sb) = terms[i], terms[j]
            op = "+-*/"[int(rng.integers(4))]
            if op == "/" and (b == 0 or (a / b).denominator != 1):
                op = "+"
            value = _BINOPS[{"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div}[op]](a, b)
            terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [(value, f"({sa} {op} {sb})")]
        value, solution = terms[0]
        if value.denominator == 1 and 1 <= value <= max_target:
            records.append({"target": int(value), "nums": nums, "solution": solution[1:-1]})
    return records
