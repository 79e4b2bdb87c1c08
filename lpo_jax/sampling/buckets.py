"""Length and batch buckets: pad ragged host inputs to a few static shapes so a run compiles a handful of
programs and then none."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

_POW2 = tuple(2 ** i for i in range(0, 15))


def _check_sizes(values, name):
    values = tuple(int(v) for v in values)
    if not values or any(v <= 0 for v in values) or list(values) != sorted(set(values)):
        raise ValueError(f"Buckets.{name} must be strictly increasing positive ints, got {values}")
    return values


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Allowed batch sizes (rows before group repetition) and prompt/prefix lengths."""

    batch: tuple = _POW2[:11]            # 1 .. 1024
    length: tuple = _POW2[4:]            # 16 .. 16384

    def __post_init__(self):
        object.__setattr__(self, "batch", _check_sizes(self.batch, "batch"))
        object.__setattr__(self, "length", _check_sizes(self.length, "length"))

    def batch_bucket(self, n: int, multiple_of: int = 1) -> int:
        """Smallest allowed batch >= n that is a multiple of `multiple_of` (the data-parallel size)."""
        return _pick(self.batch, n, "batch", multiple_of)

    def length_bucket(self, n: int) -> int:
        return _pick(self.length, n, "length", 1)


def _pick(sizes, n, name, multiple_of):
    if n <= 0:
        raise ValueError(f"{name} must be >= 1, got {n}")
    for s in sizes:
        if s >= n and s % multiple_of == 0:
            return s
    # round the largest feasible request up to a multiple (e.g. mesh data size 3 with power-of-2 buckets)
    for s in sizes:
        if s >= n:
            return -(-s // multiple_of) * multiple_of
    raise ValueError(f"{name} {n} exceeds the largest bucket {sizes[-1]}; add a larger one to Buckets.{name}")


def pad_left(seqs: Sequence[Sequence[int]], length: int, rows: int, pad_id: int = 0):
    """Left-pad token lists into tokens [rows, length] int32 and mask [rows, length] bool.

    Rows beyond len(seqs) are filler: one real `pad_id` token (so attention is never empty); callers mark
    them inactive.
    """
    if len(seqs) > rows:
        raise ValueError(f"{len(seqs)} sequences do not fit {rows} rows")
    tokens = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), bool)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            raise ValueError(f"sequence {i} is empty: every prompt/prefix needs at least one token")
        if n > length:
            raise ValueError(f"sequence {i} has {n} tokens > bucket length {length}")
        tokens[i, length - n:] = np.asarray(s, np.int32)
        mask[i, length - n:] = True
    mask[len(seqs):, -1] = True
    return tokens, mask


def pad_right(seqs: Sequence[Sequence[int]], length: int, rows: int, pad_id: int = 0):
    """Right-pad token lists into tokens [rows, length] and mask [rows, length] (empty rows allowed)."""
    if len(seqs) > rows:
        raise ValueError(f"{len(seqs)} sequences do not fit {rows} rows")
    tokens = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), bool)
    for i, s in enumerate(seqs):
        if len(s) > length:
            raise ValueError(f"sequence {i} has {len(s)} tokens > bucket length {length}")
        tokens[i, :len(s)] = np.asarray(s, np.int32)
        mask[i, :len(s)] = True
    return tokens, mask
