"""CPU testbed task family: sort a string of digits, with graded difficulty.

A prompt is ``"<op>:<digits>="`` and the answer is the digits sorted (``s`` ascending, ``r``
descending) followed by EOS::

    "s:31415=" -> "11345"        "r:2718=" -> "8721"

Difficulty grows with the number of digits (the *level*) and with the number of repeated digits
(each run of equal digits must be written the right number of times). The reward is binary: exact
match of the stripped completion with the answer.

Why this family (measured on the 2-core CPU): a 2-layer char-level transformer learns sorting in
a few hundred SFT steps, so a short warm start gives a policy that is right on a graded fraction of
samples per prompt; what RL then fixes (counting repeats, long lists) transfers to held-out
prompts. Integer addition was tried first and rejected: digit-table arithmetic (a modular-addition
lookup) is learned far too slowly by tiny transformers for a CPU warm start.

SFT demonstrations come from `demonstration`, which can drop one copy of each repeated digit with
probability `slip_prob` (a systematic, human-like slip), so the warm-started policy makes the same
kind of mistake at a controlled rate; prompts with more repeated digits then have lower success.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np

from lpo_jax.tasks.base import Example

OP_CODES = {"sort": "s", "rsort": "r"}
HELDOUT_MODULUS = 8


@dataclasses.dataclass(frozen=True)
class TestbedTaskConfig:
    """Which prompts exist.

    levels: list lengths (number of digits), sampled uniformly; ops: subset of "sort" (ascending)
    and "rsort" (descending), sampled uniformly; n_train / n_heldout: distinct prompts per split
    (disjoint: see `is_heldout_prompt`); seed: the split is a deterministic function of this config.
    """

    __test__ = False  # not a pytest test class despite the name

    levels: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    ops: tuple[str, ...] = ("sort", "rsort")
    n_train: int = 4096
    n_heldout: int = 256
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(int(x) for x in self.levels))
        object.__setattr__(self, "ops", tuple(self.ops))
        if not self.levels or min(self.levels) < 1 or max(self.levels) > 24:
            raise ValueError(f"testbed levels must be list lengths in 1..24, got {self.levels}")
        bad = [op for op in self.ops if op not in OP_CODES]
        if bad or not self.ops:
            raise ValueError(f"testbed ops must be a non-empty subset of {tuple(OP_CODES)}, got {self.ops}")
        if self.n_train < 1 or self.n_heldout < 0:
            raise ValueError(f"need n_train >= 1 and n_heldout >= 0, got {self.n_train}, {self.n_heldout}")

    @property
    def max_prompt_chars(self) -> int:
        return max(self.levels) + 3

    @property
    def max_answer_chars(self) -> int:
        return max(self.levels)


def solve(op: str, digits: str) -> str:
    return "".join(sorted(digits, reverse=op == "rsort"))


def repeated_digits(digits: str) -> int:
    """How many distinct digits occur more than once (runs the answer must repeat)."""
    return sum(digits.count(d) > 1 for d in set(digits))


def make_example(op: str, digits: str, uid: int = -1) -> Example:
    if op not in OP_CODES or not digits.isdigit():
        raise ValueError(f"bad testbed problem op={op!r} digits={digits!r}")
    return Example(
        prompt=f"{OP_CODES[op]}:{digits}=",
        answer=solve(op, digits),
        meta={"op": op, "digits": digits, "level": len(digits), "repeats": repeated_digits(digits)},
        uid=uid,
    )


def sample_problem(rng: np.random.Generator, cfg: TestbedTaskConfig) -> tuple[str, str]:
    """(op, digits): level and op uniform over the config, digits uniform i.i.d."""
    level = cfg.levels[int(rng.integers(len(cfg.levels)))]
    op = cfg.ops[int(rng.integers(len(cfg.ops)))]
    return op, "".join(str(d) for d in rng.integers(0, 10, size=level))


def is_heldout_prompt(prompt: str) -> bool:
    """Whether a prompt lies in the reserved held-out region (a fixed 1/8 of all problems, chosen by a
    hash of the prompt text). Training prompts and SFT demonstrations never come from it, whatever
    the split sizes, so held-out accuracy always measures prompts the policy has never seen."""
    return zlib.crc32(prompt.encode()) % HELDOUT_MODULUS == 0


def generate_splits(cfg: TestbedTaskConfig) -> tuple[list[Example], list[Example]]:
    """(train, heldout): distinct prompts outside / inside the held-out region, deterministic in `cfg`.

    uids are 0..n-1 within each split (in sampling order).
    """
    rng = np.random.default_rng([cfg.seed, 7_100_000])
    train: dict[str, Example] = {}
    heldout: dict[str, Example] = {}
    budget = 200 * (cfg.n_train + cfg.n_heldout) + 10_000
    for _ in range(budget):
        if len(train) >= cfg.n_train and len(heldout) >= cfg.n_heldout:
            return list(train.values()), list(heldout.values())
        op, digits = sample_problem(rng, cfg)
        prompt = f"{OP_CODES[op]}:{digits}="
        split = heldout if is_heldout_prompt(prompt) else train
        limit = cfg.n_heldout if split is heldout else cfg.n_train
        if len(split) < limit and prompt not in split:
            split[prompt] = make_example(op, digits, uid=len(split))
    raise ValueError(
        f"could not find {cfg.n_train} train and {cfg.n_heldout} held-out distinct testbed problems for "
        f"levels={cfg.levels} ops={cfg.ops} (found {len(train)} and {len(heldout)}); lower "
        "n_train/n_heldout or add longer levels"
    )


def demonstration(op: str, digits: str, rng: np.random.Generator, slip_prob: float) -> str:
    """The sorted answer in which each repeated digit loses one copy with probability `slip_prob`
    (0 -> always the correct answer). Noisy SFT targets."""
    out = []
    for d in sorted(set(digits), reverse=op == "rsort"):
        count = digits.count(d)
        if count > 1 and slip_prob > 0 and rng.random() < slip_prob:
            count -= 1
        out.append(d * count)
    return "".join(out)


def testbed_reward(completion: str, example: Example) -> float:
    """1.0 if the completion (stripped) is exactly the answer, else 0.0."""
    return float(completion.strip() == example.answer)


testbed_reward.__test__ = False  # a test module importing it by name must not collect it


def sample_demonstrations(
    cfg: TestbedTaskConfig, n: int, rng: np.random.Generator, slip_prob: float
) -> list[tuple[str, str]]:
    """`n` fresh (prompt, target) pairs from the task distribution outside the held-out region,
    with noisy targets from `demonstration`."""
    out: list[tuple[str, str]] = []
    while len(out) < n:
        op, digits = sample_problem(rng, cfg)
        prompt = f"{OP_CODES[op]}:{digits}="
        if not is_heldout_prompt(prompt):
            out.append((prompt, demonstration(op, digits, rng, slip_prob)))
    return out


def success_by(examples: Sequence[Example], success: np.ndarray, key: str) -> dict[int, float]:
    """Mean success grouped by an integer meta field (e.g. "level", "repeats")."""
    values = np.array([e.meta[key] for e in examples])
    return {int(v): float(success[values == v].mean()) for v in np.unique(values)}
