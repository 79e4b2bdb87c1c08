"""Static-shape KV cache for incremental decoding.

k, v are tuples of per-layer arrays [B, S, KV, Dh] (not one stacked array), so that updating one layer
with `jax.lax.dynamic_update_slice` inside a jit with donation is in place and never copies the cache.
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
    k: tuple            # per layer [B, S, KV, Dh]
    v: tuple            # per layer [B, S, KV, Dh]
    valid_BS: jax.Array  # bool [B, S]
    index: jax.Array    # int32 scalar: next write slot

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
        """Empty cache for `batch` rows and `max_len` slots; dtype defaults to the compute dtype."""
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"KVCache.init needs batch > 0 and max_len > 0, got {batch}, {max_len}")
        dtype = jnp.dtype(dtype or cfg.dtype)
        shape = (batch, max_len, cfg.num_kv_heads, cfg.head_dim)
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

    def write(self, layer: int, k_BTKD: jax.Array, v_BTKD: jax.Array) -> tuple:
        """(k_BSKD, v_BSKD) of `layer` with T new entries written at [index, index+T). Pure."""
        zero = jnp.zeros((), jnp.int32)
        start = (zero, self.index, zero, zero)
        k = jax.lax.dynamic_update_slice(self.k[layer], k_BTKD.astype(self.k[layer].dtype), start)
        v = jax.lax.dynamic_update_slice(self.v[layer], v_BTKD.astype(self.v[layer].dtype), start)
        return k, v
