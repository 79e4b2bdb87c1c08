"""Static-shape KV cache for incremental decoding.

k, v are tuples of per-layer arrays [B, KV, S, Dh] (not one stacked array), so that updating one layer
with `jax.lax.dynamic_update_slice` inside a jit with donation is in place and never copies the cache.
The head-major layout lets both attention matmuls read the cache as it is stored (with [B, S, KV, Dh]
XLA transposes - copies - the whole cache of every layer at every decode step).
All rows share one write index (static shapes); `valid_BS` marks slots holding real tokens, so left
padding and finished rows are excluded from attention.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from lpo_jax.models.config import ModelConfig


@flax.struct.dataclass
class KVCache:
    k: tuple            # per layer [B, KV, S, Dh]
    v: tuple            # per layer [B, KV, S, Dh]
    valid_BS: jax.Array  # bool [B, S]
    index: jax.Array    # int32 scalar: next write slot

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
        """Empty cache for `batch` rows and `max_len` slots; dtype defaults to the compute dtype."""
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"KVCache.init needs batch > 0 and max_len > 0, got {batch}, {max_len}")
        dtype = jnp.dtype(dtype or cfg.dtype)
        shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        return cls(k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
                   v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
                   valid_BS=jnp.zeros((batch, max_len), bool),
                   index=jnp.zeros((), jnp.int32))

    @property
    def batch_size(self) -> int:
        return self.valid_BS.shape[0]

    @property
    def max_len(self) -> int:
        return self.valid_BS.shape[1]

    def repeat(self, k: int) -> "KVCache":
        """Repeat each row k times consecutively ([r0, r0, .., r1, r1, ..]): K samples share one prefill."""
        rep = lambda x: jnp.repeat(x, k, axis=0)
        return self.replace(k=tuple(map(rep, self.k)), v=tuple(map(rep, self.v)),
                            valid_BS=rep(self.valid_BS))

    def take(self, rows) -> "KVCache":
        """Select (and possibly duplicate) rows by index array [B'] - for branching tree rollouts."""
        rows = jnp.asarray(rows, jnp.int32)
        tk = lambda x: jnp.take(x, rows, axis=0)
        return self.replace(k=tuple(map(tk, self.k)), v=tuple(map(tk, self.v)), valid_BS=tk(self.valid_BS))

    def write(self, layer: int, k_BKTD: jax.Array, v_BKTD: jax.Array) -> tuple:
        """(k_BKSD, v_BKSD) of `layer` with T new entries written at slots [index, index+T). Pure.

        The caller keeps index + T <= max_len (dynamic_update_slice would clamp the start otherwise)."""
        zero = jnp.zeros((), jnp.int32)
        start = (zero, zero, self.index, zero)
        k = jax.lax.dynamic_update_slice(self.k[layer], k_BKTD.astype(self.k[layer].dtype), start)
        v = jax.lax.dynamic_update_slice(self.v[layer], v_BKTD.astype(self.v[layer].dtype), start)
        return k, v
