"""Examples, the reward-function contract and fault-tolerant scoring.

Every task in lpo_jax exposes a host-side reward function with ONE signature::

    reward_fn(completion: str, example: Example) -> float

`completion` is the decoded response text only (prompt excluded, special tokens stripped);
`example` is the frozen record the prompt came from. Reward functions are plain Python: they
run on the host between sampling and the jitted train step. `score_completions` wraps a batch
of calls so that a raising reward function or a non-finite reward gives 0 for that sample, is
counted in `ScoreStats` and never stops a run.
"""
from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Callable, Mapping, Sequence

import numpy as np

RewardFn = Callable[[str, "Example"], float]


def _frozen_mapping(meta: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(meta or {}))


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt with what its reward function needs.

    Attributes:
      prompt: the text given to the tokenizer (already formatted / templated).
      answer: the gold answer as text ("" when the task checks something else, e.g. Countdown).
      meta: read-only task data (Countdown: ``nums``, ``target``; testbed: ``op``, ``level``...).
      uid: stable identifier of the prompt in its dataset (index into the pool for selectors).
    """

    prompt: str
    answer: str = ""
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    uid: int = -1

    def __post_init__(self):
        if not isinstance(self.prompt, str):
            raise TypeError(f"Example.prompt must be str, got {type(self.prompt).__name__}")
        if not isinstance(self.answer, str):
            raise TypeError(
                f"Example.answer must be str, got {type(self.answer).__name__}; convert it with str(...)"
            )
        object.__setattr__(self, "meta", _frozen_mapping(self.meta))

    def __reduce__(self):  # MappingProxyType does not pickle; rebuild from a plain dict
        return (Example, (self.prompt, self.answer, dict(self.meta), self.uid))


@dataclasses.dataclass(frozen=True)
class ScoreStats:
    """What happened while scoring a batch.

    n: completions scored; n_errors: reward function raised; n_nonfinite: returned NaN/inf or a
    non-number; first_error: "ExcType: message (sample i)" of the first failure, or None.
    """

    n: int
    n_errors: int = 0
    n_nonfinite: int = 0
    first_error: str | None = None

    @property
    def n_failed(self) -> int:
        return self.n_errors + self.n_nonfinite

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def score_completions(
    reward_fn: RewardFn,
    completions: Sequence[str],
    examples: Sequence[Example],
) -> tuple[np.ndarray, ScoreStats]:
    """Scores `completions[i]` against `examples[i]` -> (rewards f32[N], ScoreStats).

    A sample whose reward function raises, or returns NaN/inf/a non-number, gets reward 0.0 and
    is counted; the first failure message is kept. Nothing is re-raised (KeyboardInterrupt and
    SystemExit still propagate).
    """
    if len(completions) != len(examples):
        raise ValueError(
            f"score_completions: got {len(completions)} completions but {len(examples)} examples; "
            "pass one example per completion (repeat each example K times for groups of K samples)"
        )
    rewards = np.zeros((len(completions),), np.float32)
    n_errors = n_nonfinite = 0
    first_error = None
    for i, (completion, example) in enumerate(zip(completions, examples)):
        try:
            value = reward_fn(completion, example)
        except Exception as exc:  # noqa: BLE001 - a bad sample must never kill the run
            n_errors += 1
            if first_error is None:
                first_error = f"{type(exc).__name__}: {exc} (sample {i})"
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            n_nonfinite += 1
            if first_error is None:
                first_error = f"non-finite reward {value!r} (sample {i})"
            continue
        rewards[i] = number
    return rewards, ScoreStats(len(completions), n_errors, n_nonfinite, first_error)


def exact_match_reward(completion: str, example: Example) -> float:
    """1.0 if the stripped completion equals the stripped gold answer, else 0.0."""
    return float(completion.strip() == example.answer.strip())
