"""SamplingConfig: the static (hashable) description of how to pick tokens and when to stop.

It is a static argument of the jitted generate/decode functions: one compiled program per
(batch bucket, length bucket, config). Token-level stop patterns come from `stop.stop_token_patterns`.
"""
from __future__ import annotations

import dataclasses

FINISH_LENGTH = 0  # ran out of new-token budget (max_new_tokens or the row's limit)
FINISH_EOS = 1     # sampled an EOS id
FINISH_STOP = 2    # the generated tokens end with a stop-string pattern
FINISH_NAMES = ("length", "eos", "stop")


def _int_tuple(values, name: str) -> tuple:
    try:
        out = tuple(int(v) for v in values)
    except TypeError as exc:
        raise TypeError(f"SamplingConfig.{name} must be a sequence of ints, got {values!r}") from exc
    if any(v < 0 for v in out):
        raise ValueError(f"SamplingConfig.{name} must hold non-negative token ids, got {out}")
    return out


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to sample and when to stop (static: changing it compiles a new program).

    max_new_tokens: decode budget per call (rows may get a smaller dynamic limit).
    temperature: > 0; 0 is accepted and means greedy.
    top_k: keep the k most likely tokens (0 = off); uses `lax.top_k`.
    top_p: nucleus mass in (0, 1] (1 = off): the smallest set of most likely tokens whose mass >= top_p;
        tokens tied with the boundary probability are all kept. Applied after top_k.
    greedy: argmax (temperature/top_k/top_p ignored).
    eos_ids: token ids that end a row (the EOS token is kept in the output, mask 1).
    stop_sequences: token-id patterns; a row stops when its generated tokens end with one of them
        (see `stop.stop_token_patterns` to build them from stop strings).
    pad_id: written after a row's end.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    eos_ids: tuple = ()
    stop_sequences: tuple = ()
    pad_id: int = 0

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
            raise ValueError(f"SamplingConfig.max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if self.temperature == 0:
            object.__setattr__(self, "greedy", True)
            object.__setattr__(self, "temperature", 1.0)
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "eos_ids", _int_tuple(self.eos_ids, "eos_ids"))
        seqs = tuple(_int_tuple(s, "stop_sequences") for s in self.stop_sequences)
        if any(len(s) == 0 for s in seqs):
            raise ValueError("SamplingConfig.stop_sequences must not contain an empty pattern")
        object.__setattr__(self, "stop_sequences", tuple(dict.fromkeys(seqs)))
        if not isinstance(self.pad_id, int) or self.pad_id < 0:
            raise ValueError(f"SamplingConfig.pad_id must be a non-negative int, got {self.pad_id!r}")

    def replace(self, **changes) -> "SamplingConfig":
        return dataclasses.replace(self, **changes)

    @property
    def max_stop_len(self) -> int:
        return max((len(s) for s in self.stop_sequences), default=0)
