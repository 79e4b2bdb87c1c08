"""Transformer and KVCache properties on tiny random models (no HF needed)."""
import functools

import chex
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.models import KVCache, ModelConfig, Transformer, create_model, positions_from_mask
from lpo_jax.models.transformer import apply_rope, extend, rope_cos_sin, rope_inv_freq
from models_testlib import jit_forward, max_err_real

CFG = ModelConfig.tiny("qwen3")
T_FULL = 10


@pytest.fixture(scope="module")
def model():
    return create_model(CFG, seed=0)


@pytest.fixture(scope="module")
def split(model):
    return nnx.split(model)


def _tokens(shape, seed=0):
    return np.asarray(jax.random.randint(jax.random.key(seed), shape, 0, CFG.vocab_size), np.int32)


# ------------------------------------------------------------------------------------------ pure pieces
class PureFunctionsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_positions_from_mask(self):
        mask = jnp.array([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
        positions = self.variant(positions_from_mask)(mask)
        np.testing.assert_array_equal(positions, [[0, 1, 2, 3], [0, 0, 0, 1], [0, 0, 0, 0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_rope_relative_and_norm_preserving(self):
        """<rope(q, m), rope(k, n)> depends only on m - n, and RoPE preserves norms."""
        q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, CFG.head_dim))

        @self.variant
        def dot_at(m, n):
            cm, sm = rope_cos_sin(CFG, jnp.full((1, 1), m))
            cn, sn = rope_cos_sin(CFG, jnp.full((1, 1), n))
            qm, kn = apply_rope(q, cm, sm), apply_rope(k, cn, sn)
            return jnp.sum(qm * kn), jnp.linalg.norm(qm)

        d1, norm1 = dot_at(7, 3)
        d2, _ = dot_at(104, 100)
        d3, _ = dot_at(3, 7)
        np.testing.assert_allclose(d1, d2, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm1, jnp.linalg.norm(q), rtol=1e-5)
        assert abs(float(d1 - d3)) > 1e-4   # not symmetric: the offset's sign matters


def test_llama3_inv_freq_matches_transformers():
    import transformers as T
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = ModelConfig.tiny("llama", head_dim=32)
    scaling = cfg.rope_scaling_dict
    hf_cfg = T.LlamaConfig(hidden_size=128, num_attention_heads=4, head_dim=32, rope_parameters=dict(
        rope_theta=cfg.rope_theta, **scaling))
    hf_inv_freq, factor = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg)
    np.testing.assert_allclose(rope_inv_freq(cfg), hf_inv_freq.numpy(), rtol=1e-6)
    assert factor == 1.0
    plain = rope_inv_freq(cfg.replace(rope_scaling=None))
    assert np.any(plain != rope_inv_freq(cfg)) and plain[0] == rope_inv_freq(cfg)[0]  # high freq untouched


# ------------------------------------------------------------------------------------------ forward
def test_forward_shapes_dtypes_and_aliases(split):
    tokens = _tokens((2, T_FULL))
    graphdef, state = split
    logits = jit_forward(graphdef, state, tokens, np.ones_like(tokens))
    chex.assert_shape(logits, (2, T_FULL, CFG.vocab_size))
    assert logits.dtype == jnp.float32
    chex.assert_tree_all_finite(logits)

    @jax.jit
    def other_paths(state):
        model = nnx.merge(graphdef, state)
        h = model.hidden(tokens)
        return h, model.logits(h), model(tokens, attention_mask_BT=jnp.ones_like(tokens))

    h, from_hidden, from_alias = other_paths(state)
    chex.assert_shape(h, (2, T_FULL, CFG.hidden_size))
    np.testing.assert_allclose(from_hidden, logits, atol=1e-5)
    np.testing.assert_allclose(from_alias, logits, atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(pads=st.lists(st.integers(0, T_FULL - 1), min_size=2, max_size=2), seed=st.integers(0, 1000))
def test_left_padding_does_not_change_real_logits(split, pads, seed):
    """Row with p left pads == the same tokens unpadded (followed by junk, which causality ignores)."""
    graphdef, state = split
    tokens = _tokens((2, T_FULL), seed)
    junk = _tokens((2, T_FULL), seed + 1)
    padded, mask = np.zeros_like(tokens), np.zeros_like(tokens)
    for row, p in enumerate(pads):
        padded[row, p:] = tokens[row, :T_FULL - p]
        padded[row, :p] = junk[row, :p]          # pad ids are arbitrary: they must not matter
        mask[row, p:] = 1
    reference = np.asarray(jit_forward(graphdef, state, tokens, np.ones_like(tokens)))
    ours = np.asarray(jit_forward(graphdef, state, padded, mask))
    for row, p in enumerate(pads):
        np.testing.assert_allclose(ours[row, p:], reference[row, :T_FULL - p], atol=2e-5)


def test_bf16_compute_keeps_fp32_master_and_logits(split):
    bf16_model = create_model(CFG.replace(dtype="bfloat16"), seed=0)
    assert bf16_model.layers[0].mlp.up_proj[...].dtype == jnp.float32
    tokens = _tokens((2, T_FULL))
    g, s = nnx.split(bf16_model)
    logits = jit_forward(g, s, tokens, np.ones_like(tokens))
    reference = jit_forward(*split, tokens, np.ones_like(tokens))
    assert logits.dtype == jnp.float32
    # bf16 has ~3 significant digits; tiny-model logits are O(0.1), so 2e-2 absolute is a bf16-scale bound
    assert float(jnp.max(jnp.abs(logits - reference))) < 2e-2
    assert float(jnp.max(jnp.abs(logits - reference))) > 0   # it really computed in bf16


def test_gradients_flow_to_every_param(split):
    graphdef, state = split
    tokens = _tokens((2, 6))

    @jax.jit
    def loss(state):
        logits = nnx.merge(graphdef, state)(tokens)
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    grads = jax.grad(loss)(state)
    chex.assert_tree_all_finite(grads)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert float(jnp.max(jnp.abs(g))) > 0, f"zero gradient for {jax.tree_util.keystr(path)}"


def test_every_param_has_logical_axes(model):
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == var.get_value().ndim, path


# ------------------------------------------------------------------------------------------ KV cache
def test_cache_repeat_take_finished_rows_and_no_retrace(split):
    """Prefill 2 prompts once, repeat each twice (K=2 samples), decode with one row finished early, then
    branch with take(); every live row's logits equal a full forward of that row's sequence, and the
    decode step is traced once for all steps."""
    graphdef, state = split
    prompts, prompt_mask = _tokens((2, 6), 3), np.ones((2, 6), np.int32)
    prompt_mask[1, :2] = 0
    steps = _tokens((4, 3), 4)
    live = np.ones((4, 3), np.int32)
    live[2, 1:] = 0                                   # row 2 finished after its first decoded token

    prefill = jax.jit(functools.partial(extend, graphdef))
    @functools.partial(jax.jit, donate_argnums=3)
    @chex.assert_max_traces(n=1)
    def decode(state, tokens, positions, cache, token_mask):
        return extend(graphdef, state, tokens, positions, cache, token_mask)

    cache = KVCache.init(CFG, 2, 12)
    positions = np.asarray(positions_from_mask(prompt_mask))
    _, _, cache = prefill(state, prompts, positions, cache, prompt_mask)
    cache = cache.repeat(2)
    chex.assert_shape(cache.k[0], (4, CFG.num_kv_heads, 12, CFG.head_dim))
    next_pos = np.repeat(positions[:, -1] + 1, 2)
    outs = []
    for t in range(3):
        logits, _, cache = decode(state, steps[:, t:t + 1], (next_pos + t)[:, None], cache, live[:, t:t + 1])
        outs.append(np.asarray(logits[:, 0]))
    decoded = np.stack(outs, 1)                        # [4, 3, V]

    # reference: one full forward over prompt + 3 decoded + 1 branch token per (original) row
    extra = _tokens((4, 1), 5)
    full_tokens = np.concatenate([np.repeat(prompts, 2, 0), steps, extra], 1)
    full_mask = np.concatenate([np.repeat(prompt_mask, 2, 0), np.ones((4, 4), np.int32)], 1)
    full = np.asarray(jit_forward(graphdef, state, full_tokens, full_mask))
    assert max_err_real(decoded, full[:, 6:9], live) < 1e-5
    valid = np.asarray(cache.valid_BS)
    assert not valid[2, 7:9].any() and valid[3, 6:9].all() and not valid[2, :2].any()

    # branch: rows [3, 0, 0, 1] continue with one more token each
    rows = np.array([3, 0, 0, 1])
    branched = cache.take(rows)
    logits, _, branched = decode(state, extra[rows], (next_pos[rows] + 3)[:, None], branched,
                                 np.ones((4, 1), np.int32))
    np.testing.assert_allclose(np.asarray(logits[:, 0]), full[rows, 9], atol=1e-5)
    assert int(branched.index) == 10


def test_cache_init_and_errors(model):
    cache = KVCache.init(CFG, 3, 5)
    assert len(cache.k) == CFG.num_layers and cache.k[0].dtype == jnp.float32
    assert cache.batch_size == 3 and cache.max_len == 5 and int(cache.index) == 0
    assert KVCache.init(CFG.replace(dtype="bfloat16"), 1, 2).v[1].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="max_len > 0"):
        KVCache.init(CFG, 2, 0)
    with pytest.raises(ValueError, match="cache batch 3 != tokens batch 2"):
        model.extend(_tokens((2, 1)), np.zeros((2, 1), np.int32), cache)


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs(model):
    with pytest.raises(ValueError, match=r"integer array \[B, T\]"):
        model(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"integer array \[B, T\]"):
        model(np.zeros((3,), np.int32))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(np.zeros((2, 3), np.int32), attention_mask=np.ones((2, 4)))
    with pytest.raises(TypeError, match="ModelConfig"):
        Transformer({"family": "qwen3"}, rngs=nnx.Rngs(0))
