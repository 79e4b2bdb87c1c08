"""Helpers for the models tests: tiny transformers configs of each family, the parity batch, and jitted
forward / extend functions shared by every test (one compile per graphdef and shape)."""
import functools
import os

import flax.nnx as nnx
import jax
import numpy as np

from lpo_jax.models import KVCache, forward, extend, positions_from_mask

VOCAB = 160
BATCH, SEQ = 3, 12
PAD_LEFT = (0, 3, 6)          # left-padding per row of the parity batch
_COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def hf_config(family: str):
    """A tiny random transformers config of each supported layout."""
    import transformers as T

    if family == "llama":   # llama3 RoPE scaling with a small original context so all bands are used
        return T.LlamaConfig(**_COMMON, rope_parameters=dict(
            rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16))
    if family == "qwen2_tied":
        return T.Qwen2Config(**_COMMON, tie_word_embeddings=True)
    if family == "qwen2":
        return T.Qwen2Config(**_COMMON, tie_word_embeddings=False)
    if family == "qwen3":   # head_dim (24) != hidden / heads (12)
        return T.Qwen3Config(**_COMMON, head_dim=24, tie_word_embeddings=False)
    if family == "mistral":  # a sliding window shorter than the sequence, so it matters
        return T.MistralConfig(**_COMMON, sliding_window=5)
    raise KeyError(family)


HF_FAMILIES = ("llama", "qwen2_tied", "qwen2", "qwen3", "mistral")
HF_FORMATS = ("fp32_single", "fp32_sharded", "bf16_sharded")


def parity_batch():
    """tokens [B, T] int32 and mask [B, T] (0 on the left padding) used by all parity tests."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32)
    mask = np.ones((BATCH, SEQ), np.int32)
    for row, pad in enumerate(PAD_LEFT):
        mask[row, :pad] = 0
    return tokens, mask


def torch_logits(model, tokens, mask):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                    attention_mask=torch.as_tensor(mask, dtype=torch.long))
    return out.logits.float().numpy()


def max_err_real(a, b, mask):
    """Max |a - b| over real (mask = 1) positions."""
    return float(np.max(np.where(np.asarray(mask)[..., None] > 0, np.abs(np.asarray(a) - np.asarray(b)), 0)))


@functools.partial(jax.jit, static_argnums=0)
def jit_forward(graphdef, state, tokens_BT, mask_BT):
    return forward(graphdef, state, tokens_BT, mask_BT)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=4)
def jit_extend(graphdef, state, tokens_BT, positions_BT, cache, token_mask_BT):
    logits, _, cache = extend(graphdef, state, tokens_BT, positions_BT, cache, token_mask_BT)
    return logits, cache


def run_forward(model, tokens, mask):
    graphdef, state = nnx.split(model)
    return np.asarray(jit_forward(graphdef, state, tokens, mask))


def run_incremental(model, tokens, mask, prefill: int, max_len: int = 16):
    """Logits [B, T, V] from prefilling `prefill` tokens, then decoding one token at a time."""
    graphdef, state = nnx.split(model)
    positions = np.asarray(positions_from_mask(mask))
    cache = KVCache.init(model.cfg, tokens.shape[0], max_len)
    logits, cache = jit_extend(graphdef, state, tokens[:, :prefill], positions[:, :prefill], cache,
                               mask[:, :prefill])
    chunks = [np.asarray(logits)]
    for t in range(prefill, tokens.shape[1]):
        logits, cache = jit_extend(graphdef, state, tokens[:, t:t + 1], positions[:, t:t + 1], cache,
                                   mask[:, t:t + 1])
        chunks.append(np.asarray(logits))
    return np.concatenate(chunks, axis=1), cache
