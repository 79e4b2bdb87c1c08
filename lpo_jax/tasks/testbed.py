"""CPU testbed task family: integer addition / subtraction with graded difficulty.

A prompt is ``"<a><op><b>="`` with both operands zero-padded to the problem's level (number of
digits), e.g. ``"407+095="``; the answer is the result zero-padded to a fixed width (level + 1
digits for '+', level for '-': ``"0502"``) followed by EOS. Difficulty grows with the number of digits (the *level*: digits of the longer
operand) and, within a level, with the number of carries / borrows. The reward is binary exact
match of the stripped completion with the answer.

Why this family: a tiny char-level transformer learns it in a few CPU minutes; sampled answers
are often right but not always (carry propagation is the hard part), so binary-reward RL has both
positive and negative samples in most groups, and what RL fixes (carries) transfers to held-out
prompts. SFT demonstrations come from `demonstration`, which can drop each carry/borrow with a
probability (a systematic, human-like slip) so that the warm-started policy is right on a
graded fraction of samples per prompt rather than on all or none.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lpo_jax.tasks.base import Example

OPS = ("+", "-")


@dataclasses.dataclass(frozen=True)
class TestbedTaskConfig:
    """Which prompts exist.

    levels: digit counts of the longer operand, sampled uniformly (a level with few distinct
      problems, e.g. 1 digit, contributes at most its distinct problems); ops: subset of "+", "-"
      (a - b always has a >= b); n_train / n_heldout: distinct prompts in each split (disjoint);
      seed: the split is a deterministic function of this config.
    Operands are uniform over level-digit strings (leading zeros allowed), so the number of
    carries/borrows per prompt varies from 0 to `level` within a level.
    """

    levels: tuple[int, ...] = (1, 2, 3)
    ops: tuple[str, ...] = OPS
    n_train: int = 4096
    n_heldout: int = 256
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(int(x) for x in self.levels))
        object.__setattr__(self, "ops", tuple(self.ops))
        if not self.levels or min(self.levels) < 1 or max(self.levels) > 6:
            raise ValueError(f"testbed levels must be digit counts in 1..6, got {self.levels}")
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"testbed ops must be a non-empty subset of {OPS}, got {self.ops}")
        if self.n_train < 1 or self.n_heldout < 0:
            raise ValueError(f"need n_train >= 1 and n_heldout >= 0, got {self.n_train}, {self.n_heldout}")

    @property
    def max_prompt_chars(self) -> int:
        return 2 * max(self.levels) + 2

    @property
    def max_answer_chars(self) -> int:
        return max(self.levels) + 1


def sample_problem(rng: np.random.Generator, level: int, op: str) -> tuple[int, str, int]:
    """(a, op, b) with a, b uniform in [0, 10**level); a >= b for '-' (results stay >= 0)."""
    x, y = (int(v) for v in rng.integers(0, 10**level, size=2))
    if op == "-":
        x, y = max(x, y), min(x, y)
    return x, op, y


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def count_carries(a: int, op: str, b: int) -> int:
    """Number of carries (addition) or borrows (subtraction) in column arithmetic."""
    carry, count = 0, 0
    while a or b or carry:
        da, db = a % 10, b % 10
        if op == "+":
            carry = int(da + db + carry >= 10)
        else:
            carry = int(da - db - carry < 0)
        count += carry
        a, b = a // 10, b // 10
        if op == "-" and not (a or b):
            break
    return count


def format_problem(a: int, op: str, b: int, level: int) -> tuple[str, str]:
    """(prompt, answer) with operands zero-padded to `level` digits and the answer to the fixed
    width of its level (level + 1 digits for '+', level for '-'), e.g. level 3:
    ``"081+209="`` -> ``"0290"``. Fixed widths put every digit at a fixed offset from the digits it
    depends on, which a tiny transformer learns quickly."""
    width = level + 1 if op == "+" else level
    return f"{a:0{level}d}{op}{b:0{level}d}=", f"{solve(a, op, b):0{width}d}"


def make_example(a: int, op: str, b: int, level: int | None = None, uid: int = -1) -> Example:
    level = level or max(len(str(a)), len(str(b)))
    prompt, answer = format_problem(a, op, b, level)
    return Example(
        prompt=prompt,
        answer=answer,
        meta={"a": a, "op": op, "b": b, "level": level, "carries": count_carries(a, op, b)},
        uid=uid,
    )


def generate_splits(cfg: TestbedTaskConfig) -> tuple[list[Example], list[Example]]:
    """(train, heldout): disjoint lists of distinct prompts, deterministic in `cfg`.

    Problems are drawn level-uniformly and op-uniformly, duplicates rejected; the first
    `n_heldout` distinct problems (after a seeded shuffle) are held out. uids are 0..n-1 per split.
    """
    rng = np.random.default_rng([cfg.seed, 7_100_000])
    total = cfg.n_train + cfg.n_heldout
    seen: dict[str, tuple[int, str, int, int]] = {}
    attempts = 0
    while len(seen) < total:
        attempts += 1
        if attempts > 50 * total + 1000:
            raise ValueError(
                f"could not find {total} distinct testbed problems for levels={cfg.levels} "
                f"ops={cfg.ops}; lower n_train/n_heldout or add larger levels"
            )
        level = cfg.levels[int(rng.integers(len(cfg.levels)))]
        op = cfg.ops[int(rng.integers(len(cfg.ops)))]
        a, op, b = sample_problem(rng, level, op)
        seen.setdefault(format_problem(a, op, b, level)[0], (a, op, b, level))
    problems = list(seen.values())
    order = rng.permutation(len(problems))
    problems = [problems[i] for i in order]
    heldout = [make_example(*p, uid=i) for i, p in enumerate(problems[: cfg.n_heldout])]
    train = [make_example(*p, uid=i) for i, p in enumerate(problems[cfg.n_heldout :])]
    return train, heldout


def demonstration(a: int, op: str, b: int, level: int, rng: np.random.Generator, slip_prob: float) -> str:
    """The fixed-width answer written by column arithmetic in which each carry/borrow is dropped
    with probability `slip_prob` (0 -> always the correct answer). Noisy SFT targets."""
    width = level + 1 if op == "+" else level
    digits, carry = [], 0
    for _ in range(width):
        da, db = a % 10, b % 10
        value = da + db + carry if op == "+" else da - db - carry
        carry = int(value >= 10) if op == "+" else int(value < 0)
        digits.append(value % 10)
        if carry and slip_prob > 0 and rng.random() < slip_prob:
            carry = 0
        a, b = a // 10, b // 10
    return "".join(str(d) for d in reversed(digits))


def testbed_reward(completion: str, example: Example) -> float:
    """1.0 if the completion (stripped) is exactly the answer, else 0.0."""
    return float(completion.strip() == example.answer)


def sample_demonstrations(
    pool: Sequence[Example], n: int, rng: np.random.Generator, slip_prob: float
) -> list[tuple[str, str]]:
    """`n` (prompt, target) pairs drawn uniformly from `pool` with noisy targets."""
    idx = rng.integers(len(pool), size=n)
    out = []
    for i in idx:
        m = pool[int(i)].meta
        out.append((pool[int(i)].prompt, demonstration(m["a"], m["op"], m["b"], m["level"], rng, slip_prob)))
    return out
