"""Flax NNX decoder-only transformer: Llama 3.x, Qwen2/2.5, Qwen3 and Mistral by config.

RMSNorm, RoPE (positions -> angles in fp32, rotate-half layout as in HF), grouped-query attention by
reshaping queries to [B, T, KV, G, Dh] (K/V are never repeated), SwiGLU MLP, causal mask with left
padding. Params are stored in `cfg.param_dtype` and cast to `cfg.dtype` for compute; softmax, norms and
the logits are fp32. Every Param carries `logical_axes` metadata that `lpo_jax.models.sharding` maps onto
a ('data', 'fsdp', 'tensor') mesh.

Functional use: `graphdef, state = nnx.split(model)`; inside jit `nnx.merge(graphdef, state)(...)`, or the
pure `forward` / `extend` functions below.
"""
from __future__ import annotations

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.models.cache import KVCache
from lpo_jax.models.config import ModelConfig
from lpo_jax.models.sharding import logical_to_spec

_F32 = jnp.float32
_INIT_STD = 0.02


def _normal_init(key: jax.Array, shape) -> jax.Array:
    """N(0, 0.02^2) init. Traced (jit / eval_shape, e.g. `create_model` on a mesh): jax.random. Eager:
    numpy seeded from the key - the same distribution, and it avoids compiling one threefry kernel per
    weight shape (seconds of CPU per model, which dominates small-model tests). The two paths draw
    different values for the same seed; each is deterministic."""
    try:
        seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return _INIT_STD * jax.random.normal(key, shape, _F32)
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32) * np.float32(_INIT_STD))


def _param(rngs: nnx.Rngs | None, shape, dtype, axes, init="normal") -> nnx.Param:
    dtype = jnp.dtype(dtype)
    if init == "normal":
        value = _normal_init(rngs.params(), shape).astype(dtype)
    else:
        value = (jnp.ones if init == "ones" else jnp.zeros)(shape, dtype)
    return nnx.Param(value, logical_axes=axes)


# ---------------------------------------------------------------------------------------------- RoPE
def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies [Dh/2] (float32, numpy: a compile-time constant), incl. linear/llama3 scaling."""
    dim = cfg.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (np.float32(cfg.rope_theta) ** exponent)).astype(np.float32)
    scaling = cfg.rope_scaling_dict
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "linear":
        inv_freq = inv_freq / np.float32(scaling["factor"])
    elif rope_type == "llama3":
        factor, low, high = (float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def rope_cos_sin(cfg: ModelConfig, positions_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, T, 1, Dh] in fp32 (HF layout: the half-frequencies repeated twice)."""
    angles = positions_BT.astype(_F32)[..., None] * jnp.asarray(rope_inv_freq(cfg))
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BTHK: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    x = x_BTHK.astype(_F32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(x_BTHK.dtype)


# ---------------------------------------------------------------------------------------------- layers
class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, param_dtype, axis_name: str):
        self.weight = _param(None, (dim,), param_dtype, (axis_name,), init="ones")
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(_F32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(x.dtype) * y.astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, kv, hd, pd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.param_dtype
        self.q_proj = _param(rngs, (d, h, hd), pd, ("embed", "heads", "head_dim"))
        self.k_proj = _param(rngs, (d, kv, hd), pd, ("embed", "kv_heads", "head_dim"))
        self.v_proj = _param(rngs, (d, kv, hd), pd, ("embed", "kv_heads", "head_dim"))
        self.o_proj = _param(rngs, (h, hd, d), pd, ("heads", "head_dim", "embed"))
        if cfg.qkv_bias:
            self.q_bias = _param(None, (h, hd), pd, ("heads", "head_dim"), init="zeros")
            self.k_bias = _param(None, (kv, hd), pd, ("kv_heads", "head_dim"), init="zeros")
            self.v_bias = _param(None, (kv, hd), pd, ("kv_heads", "head_dim"), init="zeros")
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, pd, "head_dim")
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, pd, "head_dim")
        self.cfg = cfg

    def project(self, x_BTD, cos, sin):
        """q [B,T,H,Dh] and k, v [B,KV,T,Dh] (the cache layout) with biases, q/k norms and RoPE applied."""
        cfg, dt = self.cfg, x_BTD.dtype
        q = jnp.einsum("btd,dhk->bthk", x_BTD, self.q_proj[...].astype(dt))
        k = jnp.einsum("btd,dhk->bthk", x_BTD, self.k_proj[...].astype(dt))
        v = jnp.einsum("btd,dhk->bthk", x_BTD, self.v_proj[...].astype(dt))
        if cfg.qkv_bias:
            q, k, v = (q + self.q_bias[...].astype(dt), k + self.k_bias[...].astype(dt),
                       v + self.v_bias[...].astype(dt))
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        k = apply_rope(k, cos, sin)
        return apply_rope(q, cos, sin), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def attend(self, q_BTHK, k_BKSD, v_BKSD, mask_BTS) -> jax.Array:
        """Grouped-query attention over keys/values [B, KV, S, Dh]; returns the output projection [B, T, D].

        K/V stay in the cache layout: both attention matmuls then batch over (B, KV) with no transpose or
        copy of the (possibly long) cache; only the T queries are rearranged."""
        cfg = self.cfg
        b, t, h, hd = q_BTHK.shape
        kv, g = cfg.num_kv_heads, cfg.num_groups
        # queries of one KV head as one [G*T, Dh] matrix: plain batched matmuls over (B, KV), which XLA:CPU runs
        # on its fast GEMM path (a separate group axis fell back to a ~5x slower generic loop)
        q = q_BTHK.reshape(b, t, kv, g, hd).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, hd)
        scores = jnp.einsum("bkqd,bksd->bkqs", q, k_BKSD.astype(q.dtype), preferred_element_type=_F32)
        scores = scores.reshape(b, kv, g, t, -1) * np.float32(hd ** -0.5)
        scores = jnp.where(mask_BTS[:, None, None], scores, jnp.finfo(_F32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(b, kv, g * t, -1)
        out = jnp.einsum("bkqs,bksd->bkqd", probs, v_BKSD.astype(q.dtype))
        out = out.reshape(b, kv, g, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd)
        return jnp.einsum("bthk,hkd->btd", out, self.o_proj[...].astype(q.dtype))


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f, pd = cfg.hidden_size, cfg.intermediate_size, cfg.param_dtype
        self.gate_proj = _param(rngs, (d, f), pd, ("embed", "mlp"))
        self.up_proj = _param(rngs, (d, f), pd, ("embed", "mlp"))
        self.down_proj = _param(rngs, (f, d), pd, ("mlp", "embed"))

    def __call__(self, x_BTD):
        dt = x_BTD.dtype
        gate = x_BTD @ self.gate_proj[...].astype(dt)
        up = x_BTD @ self.up_proj[...].astype(dt)
        return (jax.nn.silu(gate) * up) @ self.down_proj[...].astype(dt)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype, "embed")
        self.attn = Attention(cfg, rngs=rngs)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype, "embed")
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x_BTD, cos, sin, mask_BTS, write_kv=None):
        """One residual block; `write_kv(k, v) -> (k_all, v_all)` inserts the new K/V into a cache."""
        q, k, v = self.attn.project(self.input_norm(x_BTD), cos, sin)
        if write_kv is not None:
            k, v = write_kv(k, v)
        x_BTD = x_BTD + self.attn.attend(q, k, v, mask_BTS)
        return x_BTD + self.mlp(self.post_attn_norm(x_BTD)), (k, v)


# ---------------------------------------------------------------------------------------------- model
def positions_from_mask(mask_BT: jax.Array) -> jax.Array:
    """Position ids cumsum(mask) - 1 clipped at 0 (left padding gets position 0)."""
    return jnp.maximum(jnp.cumsum(mask_BT.astype(jnp.int32), axis=-1) - 1, 0)


def _window_ok(cfg: ModelConfig, key_slot, query_slot):
    if cfg.sliding_window is None:
        return True
    return key_slot > query_slot - cfg.sliding_window


def vocab_logits(h_BTD: jax.Array, weight: jax.Array, tied: bool) -> jax.Array:
    """h @ output projection in the compute dtype of h, float32 logits [..., V]; ``weight`` as output_weight()."""
    w = weight.astype(h_BTD.dtype)
    if tied:
        return jnp.einsum("...d,vd->...v", h_BTD, w, preferred_element_type=_F32)
    return jnp.einsum("...d,dv->...v", h_BTD, w, preferred_element_type=_F32)


class Transformer(nnx.Module):
    """Decoder-only LM. `mesh` (static, optional) enables batch sharding constraints on activations."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, mesh: jax.sharding.Mesh | None = None):
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"Transformer expects a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.mesh = mesh
        self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), cfg.param_dtype, ("vocab", "embed"))
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype, "embed")
        if not cfg.tie_embeddings:
            self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), cfg.param_dtype, ("embed", "vocab"))

    # -------------------------------------------------------------- pieces
    def _constrain(self, x, logical_axes):
        """with_sharding_constraint by the logical-axis rules when a mesh is attached (else identity)."""
        if self.mesh is None:
            return x
        spec = logical_to_spec(logical_axes, x.shape, self.mesh)
        return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(self.mesh, spec))

    def _constrain_batch(self, x):
        """Activations: batch over ('data', 'fsdp') where those axes divide it."""
        return self._constrain(x, ("batch",) + (None,) * (x.ndim - 1))

    def _constrain_cache(self, x_BKSD):
        """Keep cache arrays in their layout (batch over data/fsdp, KV heads over tensor) so a donated
        cache is updated in place instead of being resharded every step."""
        return self._constrain(x_BKSD, ("batch", "kv_heads", "length", "head_dim"))

    def _embed(self, tokens_BT):
        tokens_BT = jnp.asarray(tokens_BT)
        if tokens_BT.ndim != 2 or not jnp.issubdtype(tokens_BT.dtype, jnp.integer):
            raise ValueError(f"tokens must be an integer array [B, T], got {tokens_BT.dtype}{tokens_BT.shape}")
        # FSDP-style: gather the table's embed dim before the lookup (vocab stays tensor-sharded).
        table = self._constrain(self.embed[...], ("vocab", None))
        x = jnp.take(table, tokens_BT, axis=0).astype(self.cfg.dtype)
        return self._constrain_batch(x)

    def logits(self, h_BTD: jax.Array) -> jax.Array:
        """Vocabulary logits [..., V] in float32 (lm_head, or the tied embedding)."""
        return vocab_logits(h_BTD, self.output_weight(), self.cfg.tie_embeddings)

    def output_weight(self) -> jax.Array:
        """The output projection: the embedding [V, D] when tied, else lm_head [D, V]."""
        return self.embed[...] if self.cfg.tie_embeddings else self.lm_head[...]

    # -------------------------------------------------------------- full forward
    def hidden(self, tokens_BT, *, attention_mask=None, positions=None) -> jax.Array:
        """Final-normed hidden states [B, T, D] (compute dtype) of a full causal forward."""
        cfg = self.cfg
        x = self._embed(tokens_BT)
        b, t = x.shape[:2]
        mask_BT = jnp.ones((b, t), bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        if mask_BT.shape != (b, t):
            raise ValueError(f"attention_mask shape {mask_BT.shape} != tokens shape {(b, t)}")
        if positions is None:
            positions = positions_from_mask(mask_BT)
        cos, sin = rope_cos_sin(cfg, positions)
        slot = jnp.arange(t)
        causal_TS = (slot[None, :] <= slot[:, None]) & _window_ok(cfg, slot[None, :], slot[:, None])
        mask_BTS = causal_TS[None] & mask_BT[:, None, :]
        for layer in self.layers:
            x, _ = layer(x, cos, sin, mask_BTS)
            x = self._constrain_batch(x)
        return self.final_norm(x)

    def __call__(self, tokens_BT, *, attention_mask=None, positions=None,
                 attention_mask_BT=None, positions_BT=None) -> jax.Array:
        """Logits [B, T, V] float32. `attention_mask` (alias attention_mask_BT): 1 real, 0 left padding."""
        attention_mask = attention_mask if attention_mask is not None else attention_mask_BT
        positions = positions if positions is not None else positions_BT
        return self.logits(self.hidden(tokens_BT, attention_mask=attention_mask, positions=positions))

    # -------------------------------------------------------------- incremental forward
    def extend(self, tokens_BT, positions_BT, cache: KVCache, *, token_mask_BT=None,
               compute_logits: bool = True):
        """Append T tokens to the cache and run them: returns (logits_BTV | None, h_BTD, cache').

        New K/V go to slots [cache.index, cache.index + T) of every row; `token_mask_BT` (default all 1)
        marks which of them are real (0 = left padding or a finished row). Each query attends to all
        valid slots up to its own. `compute_logits=False` skips the vocabulary projection (e.g. a long
        prefill where only the last position is needed: call `model.logits(h[:, -1:])`).
        """
        cfg = self.cfg
        x = self._embed(tokens_BT)
        b, t = x.shape[:2]
        if cache.valid_BS.shape[0] != b:
            raise ValueError(f"cache batch {cache.valid_BS.shape[0]} != tokens batch {b}")
        s = cache.max_len
        token_mask = jnp.ones((b, t), bool) if token_mask_BT is None else jnp.asarray(token_mask_BT).astype(bool)
        zero = jnp.zeros((), jnp.int32)
        valid_BS = jax.lax.dynamic_update_slice(cache.valid_BS, token_mask, (zero, cache.index))
        query_slot = cache.index + jnp.arange(t)
        key_slot = jnp.arange(s)
        allowed_TS = (key_slot[None, :] <= query_slot[:, None]) & _window_ok(cfg, key_slot[None, :],
                                                                             query_slot[:, None])
        mask_BTS = allowed_TS[None] & valid_BS[:, None, :]
        cos, sin = rope_cos_sin(cfg, jnp.asarray(positions_BT))
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            def write_kv(k, v, i=i):
                return tuple(map(self._constrain_cache, cache.write(i, k, v)))

            x, (k, v) = layer(x, cos, sin, mask_BTS, write_kv=write_kv)
            x = self._constrain_batch(x)
            new_k.append(k)
            new_v.append(v)
        h = self.final_norm(x)
        cache = cache.replace(k=tuple(new_k), v=tuple(new_v), valid_BS=valid_BS, index=cache.index + t)
        return (self.logits(h) if compute_logits else None), h, cache


# ---------------------------------------------------------------------------------------------- pure API
def forward(graphdef, state, tokens_BT, attention_mask_BT=None, positions_BT=None) -> jax.Array:
    """Pure logits function over (graphdef, state) - jit it (graphdef static via closure or partial)."""
    model = nnx.merge(graphdef, state)
    return model(tokens_BT, attention_mask=attention_mask_BT, positions=positions_BT)


def extend(graphdef, state, tokens_BT, positions_BT, cache: KVCache, token_mask_BT=None,
           compute_logits: bool = True):
    """Pure incremental forward over (graphdef, state): (logits | None, h, cache')."""
    model = nnx.merge(graphdef, state)
    return model.extend(tokens_BT, positions_BT, cache, token_mask_BT=token_mask_BT,
                        compute_logits=compute_logits)
