"""DAPO pipeline steps (spec §3, §9.6): pure functions used *around* the loss, not loss terms."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lpo_jax.objectives import aggregation as agg


def nonzero_variance_groups(rewards_BK) -> jax.Array:
    """bool [B]: True where the group's rewards are not all equal (what DAPO dynamic sampling keeps).

    Use it to resample (host side) or, in a static-shape batch, to zero the mask of dropped groups
    (`mask_BKT * keep_B[:, None, None]`): fully masked groups are ignored by every loss.
    """
    agg.check_rank("rewards_BK", rewards_BK, 2, "B, K")
    return rewards_BK.max(-1) != rewards_BK.min(-1)


def overlong_penalty(lengths, max_len: int, cache_len: int) -> jax.Array:
    """DAPO soft overlong punishment added to the reward, same shape as `lengths`.

    0 for |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache for L_max - L_cache < |y| <= L_max
    (linear from 0 to -1); -1 beyond L_max.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}.")
    lengths = jnp.asarray(lengths)
    start = max_len - cache_len
    ramp = (start - lengths) / cache_len
    return jnp.where(lengths <= start, 0.0, jnp.where(lengths <= max_len, ramp, -1.0))
