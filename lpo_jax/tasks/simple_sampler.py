"""A small jitted sampler used only to measure the testbed policy (SFT spread, base accuracy).

Stand-in until lpo_jax.sampling is wired in: prefill of left-padded prompts, then a `lax.scan`
decode loop over a static number of new tokens with a KV cache (lpo_jax.models.KVCache).
Temperature 0 = greedy. Rows stop at EOS; later tokens are `pad_id`.
"""
from __future__ import annotations

import functools

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.models.cache import KVCache


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "eos_id", "pad_id"))
def sample_tokens(graphdef, state, prompts_BP, mask_BP, key, temperature, *, max_new_tokens: int,
                  eos_id: int, pad_id: int):
    """Samples completions -> (tokens_BN int32, finished_B bool). `temperature` <= 0 is greedy."""
    model = nnx.merge(graphdef, state)
    b, p = prompts_BP.shape
    mask_BP = mask_BP.astype(bool)
    cache = KVCache.init(model.cfg, b, p + max_new_tokens)
    positions_BP = jnp.maximum(jnp.cumsum(mask_BP, axis=-1) - 1, 0)
    logits, _, cache = model.extend(prompts_BP, positions_BP, cache, token_mask_BT=mask_BP)
    next_pos_B = mask_BP.sum(-1).astype(jnp.int32)

    def pick(logits_BV, key):
        greedy = jnp.argmax(logits_BV, -1)
        scaled = logits_BV / jnp.maximum(temperature, 1e-6)
        sampled = jax.random.categorical(key, scaled, axis=-1)
        return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)

    def step(carry, key):
        logits_BV, cache, pos_B, done_B = carry
        tok_B = jnp.where(done_B, pad_id, pick(logits_BV, key))
        new_done = done_B | (tok_B == eos_id)
        logits, _, cache = model.extend(tok_B[:, None], pos_B[:, None], cache,
                                        token_mask_BT=~done_B[:, None])
        return (logits[:, -1], cache, pos_B + 1, new_done), tok_B

    init = (logits[:, -1], cache, next_pos_B, jnp.zeros((b,), bool))
    (_, _, _, done_B), toks_NB = jax.lax.scan(step, init, jax.random.split(key, max_new_tokens))
    return toks_NB.T, done_B


def left_pad(token_lists, pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads lists of ids -> (tokens [N, L] int32, mask [N, L] int32)."""
    length = length or max(len(t) for t in token_lists)
    tokens = np.full((len(token_lists), length), pad_id, np.int32)
    mask = np.zeros((len(token_lists), length), np.int32)
    for i, ids in enumerate(token_lists):
        if len(ids) > length:
            raise ValueError(f"prompt {i} has {len(ids)} tokens > padded length {length}")
        if ids:
            tokens[i, length - len(ids):] = ids
            mask[i, length - len(ids):] = 1
    return tokens, mask
