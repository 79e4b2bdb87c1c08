"""avg@k and pass@k from per-sample correctness.

``correct_NS`` holds, for N prompts, S >= k graded samples each (True = solved). avg@k is the mean success over
samples (the expected pass@1). pass@k uses the unbiased estimator of Chen et al. (2021):
pass@k = 1 - C(S - c, k) / C(S, k) per prompt, with c correct out of S, averaged over prompts.
"""
from __future__ import annotations

import numpy as np


def avg_at_k(correct_NS: np.ndarray) -> float:
    """Mean success over all samples of all prompts."""
    correct_NS = _check(correct_NS)
    return float(correct_NS.mean())


def pass_at_k(correct_NS: np.ndarray, k: int) -> float:
    """Unbiased pass@k averaged over prompts (needs k <= samples per prompt)."""
    correct_NS = _check(correct_NS)
    n = correct_NS.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= samples per prompt; got k={k} with {n} samples")
    c = correct_NS.sum(1)
    # 1 - prod_{i=n-c+1}^{n} (1 - k / i), stable form of 1 - C(n-c, k)/C(n, k)
    out = np.ones(len(c))
    for row, ci in enumerate(c):
        if n - ci >= k:
            out[row] = 1.0 - np.prod(1.0 - k / np.arange(n - ci + 1, n + 1))
    return float(out.mean())


def _check(correct_NS) -> np.ndarray:
    arr = np.asarray(correct_NS, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"expected correctness of shape [prompts, samples]; got shape {arr.shape}")
    return arr
