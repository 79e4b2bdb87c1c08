"""Input checks for selectors, at the Python boundary.

How checks work under jit: shapes and dtypes are static, so shape errors (empty candidate set, batch larger
than the candidate set, mismatched `selected`/`successes`) are raised while tracing, inside or outside jit.
Value checks (ids out of range, duplicate ids, successes outside [0, n]) need concrete arrays: they run when
the arguments are concrete (eager calls, or the host-side `validate_*` functions called on the data before
a jitted step) and are skipped for tracers. Inside a jitted training step, call `validate_*` on the host
before dispatch, or wrap the step with `jax.experimental.checkify` if you need in-graph checks. Every
selector's `select`/`update` calls these checks itself; under jit only the static (shape) part can fire,
and out-of-range ids then follow JAX's gather/scatter rules (clamped/dropped), so validate on the host.
"""
import jax
import numpy as np


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def validate_candidates(candidates, num_prompts: int, batch_size: int) -> None:
    """Raise ValueError/TypeError unless `candidates` is a 1-D integer id array of >= batch_size unique ids."""
    shape = np.shape(candidates)
    if len(shape) != 1:
        raise ValueError(f"candidates must be a 1-D array of prompt ids, got shape {shape}.")
    if shape[0] == 0:
        raise ValueError("candidate set is empty: pass at least batch_size prompt ids to select from.")
    if shape[0] < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the candidate set ({shape[0]} ids): pass more "
            "candidates or build the selector with a smaller batch_size.")
    dtype = candidates.dtype if hasattr(candidates, "dtype") else np.asarray(candidates).dtype
    if not np.issubdtype(np.dtype(dtype), np.integer):
        raise TypeError(f"candidates must be integer prompt ids, got dtype {dtype}.")
    if _is_concrete(candidates):
        c = np.asarray(candidates)
        _check_range(c, num_prompts, "candidates")
        if np.unique(c).size != c.size:
            raise ValueError("candidates contain duplicate prompt ids; pass each prompt at most once.")


def validate_update(selected, successes, n, num_prompts: int) -> None:
    """Raise ValueError unless ids are in range and unique and 0 <= successes <= n (n >= 1)."""
    s_shape, c_shape = np.shape(selected), np.shape(successes)
    if len(s_shape) != 1 or s_shape != c_shape:
        raise ValueError(
            f"selected and successes must be 1-D arrays of equal length, got {s_shape} and {c_shape}.")
    if _is_concrete(n) and int(np.asarray(n)) < 1:
        raise ValueError(f"n (rollouts per prompt) must be >= 1, got {int(np.asarray(n))}.")
    if _is_concrete(selected):
        ids = np.asarray(selected)
        _check_range(ids, num_prompts, "selected")
        if np.unique(ids).size != ids.size:
            raise ValueError("selected contains duplicate prompt ids; each prompt may be updated once per call.")
    if _is_concrete(successes) and _is_concrete(n):
        c, nn = np.asarray(successes), int(np.asarray(n))
        if (c < 0).any() or (c > nn).any():
            bad = c[(c < 0) | (c > nn)][:5].tolist()
            raise ValueError(f"successes must lie in [0, n={nn}] (counts of correct rollouts); got {bad}.")


def _check_range(ids, num_prompts, name):
    if ids.size and (ids.min() < 0 or ids.max() >= num_prompts):
        bad = ids[(ids < 0) | (ids >= num_prompts)][:5].tolist()
        raise ValueError(f"{name} has prompt ids outside [0, {num_prompts}): {bad}.")


def check_common_hparams(num_prompts: int, batch_size: int) -> None:
    """Factory-time check shared by every selector."""
    if int(num_prompts) < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}.")
    if not 1 <= int(batch_size) <= int(num_prompts):
        raise ValueError(f"batch_size must be in [1, num_prompts={num_prompts}], got {batch_size}.")


def check_decay(decay: float, name: str = "decay") -> None:
    if not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1] (1 = no forgetting), got {decay}.")
