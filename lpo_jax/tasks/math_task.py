"""Math answers checked with math-verify: binary reward.

The model's answer is the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in the
completion, else of the last ``<answer>...</answer>`` block; no answer -> 0. The gold answer
(`Example.answer`) may be a bare answer ("\\frac{1}{2}", "42") or a full solution, in which case
its last boxed expression is used. Both are parsed by `math_verify.parse` and compared with
`math_verify.verify` (symbolic / numeric equivalence); 1.0 if equivalent else 0.0.

math-verify's timeouts use SIGALRM, which only works in the main thread; outside it (e.g. a
reward thread pool) they are switched off.
"""
from __future__ import annotations

import functools
import re
import threading
from typing import Any

from lpo_jax.tasks.base import Example

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, or None."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None  # unbalanced braces: treat as no answer


def extract_math_answer(completion: str) -> str | None:
    """Last boxed expression, else last ``<answer>`` block, else None."""
    boxed = extract_boxed(completion)
    if boxed is not None:
        return boxed
    found = _ANSWER_RE.findall(completion)
    return found[-1].strip() if found else None


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse(answer: str) -> list[Any]:
    import math_verify  # lazy: importing sympy costs ~1 s

    return math_verify.parse("\\boxed{" + answer + "}", parsing_timeout=_timeout())


@functools.lru_cache(maxsize=65536)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    boxed = extract_boxed(gold)
    return tuple(_parse(boxed if boxed is not None else gold.strip()))


def math_reward(completion: str, example: Example) -> float:
    """1.0 if the extracted answer is math-equivalent to `example.answer`, else 0.0."""
    import math_verify

    answer = extract_math_answer(completion)
    if not answer:
        return 0.0
    gold = _parse_gold(example.answer)
    if not gold:
        raise ValueError(f"math-verify could not parse the gold answer {example.answer!r} (uid {example.uid})")
    pred = _parse(answer)
    if not pred:
        return 0.0
    return float(math_verify.verify(list(gold), pred, timeout_seconds=_timeout()))
