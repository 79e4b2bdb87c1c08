"""Pure generation functions over a merged model: prefill/append chunks, the decode loop, generate.

Everything here runs inside `jax.jit` (see `sampler.Sampler` for the compiled, bucketed, sharded wrappers).
The KV cache is a static-shape `KVCache` (all rows share one write index); a row's generated token i of a
`decode` call sits in slot `index_at_start + i`. Rows that are finished (or inactive) keep running through
the batched math but write invalid slots, so a later `append_tokens` / `decode` continues every row exactly
where its real tokens end (positions are per row).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from lpo_jax.models import KVCache
from lpo_jax.sampling.config import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, SamplingConfig
from lpo_jax.sampling.ops import select_tokens
from lpo_jax.sampling.stop import ends_with_pattern, push_recent


@flax.struct.dataclass
class SampleOutput:
    """Result of a decode call (rows in group order: prompt n's k-th sample is row n*K + k).

    tokens [B, T] int32: generated tokens, `pad_id` after the end; the EOS / stop tokens are included.
    logprobs [B, T] f32: log softmax(policy logits)[token] at temperature 1, no top-k/top-p (the policy that
        RL importance ratios use; equal to a full forward's log-probs); 0 where mask is 0.
    sampling_logprobs [B, T] f32: log-prob under the actual sampling distribution (0 for greedy).
    mask [B, T] bool: generated positions (tokens[:, :lengths]).
    lengths [B] int32; finish_reason [B] int32: FINISH_LENGTH / FINISH_EOS / FINISH_STOP.
    """

    tokens: jax.Array
    logprobs: jax.Array
    sampling_logprobs: jax.Array
    mask: jax.Array
    lengths: jax.Array
    finish_reason: jax.Array


@flax.struct.dataclass
class DecodeState:
    """Where every row stands: its KV cache, the final hidden state of its last real token [B, D] (the
    next-token logits are `model.logits(hidden)`; a hidden state is V/D times smaller to carry) and the
    position of its next token [B] int32."""

    cache: KVCache
    hidden: jax.Array
    next_pos: jax.Array

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    def take(self, rows) -> "DecodeState":
        """Select / duplicate rows (e.g. K continuations of one prefix share its computation)."""
        rows = jnp.asarray(rows, jnp.int32)
        return DecodeState(self.cache.take(rows), jnp.take(self.hidden, rows, 0), jnp.take(self.next_pos, rows, 0))

    def repeat(self, k: int) -> "DecodeState":
        """Repeat each row k times consecutively (the group layout of `KVCache.repeat`)."""
        if k == 1:
            return self
        return DecodeState(self.cache.repeat(k), jnp.repeat(self.hidden, k, 0), jnp.repeat(self.next_pos, k, 0))


def empty_state(model, batch: int, max_len: int, cache_dtype=None) -> DecodeState:
    cfg = model.cfg
    return DecodeState(KVCache.init(cfg, batch, max_len, cache_dtype),
                       jnp.zeros((batch, cfg.hidden_size), jnp.dtype(cfg.dtype)), jnp.zeros((batch,), jnp.int32))


def append_tokens(model, state: DecodeState, tokens_BT, mask_BT) -> DecodeState:
    """Run a chunk of tokens (prompt, prefix or observation) through the model, writing the cache.

    mask_BT marks real tokens (any padding pattern: left padding for prompts, right padding for
    observations). Positions continue each row's own count. Rows with no real token keep their state.
    No vocabulary projection here: only the last real token's hidden state is kept.
    """
    mask = jnp.asarray(mask_BT).astype(bool)
    t = mask.shape[1]
    positions = state.next_pos[:, None] + jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    _, h, cache = model.extend(tokens_BT, positions, state.cache, token_mask_BT=mask, compute_logits=False)
    n_real = jnp.sum(mask, axis=1).astype(jnp.int32)
    last = t - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0].astype(state.hidden.dtype)
    hidden = jnp.where((n_real > 0)[:, None], h_last, state.hidden)
    return DecodeState(cache, hidden, state.next_pos + n_real)


def decode(model, state: DecodeState, key, cfg: SamplingConfig, active_B=None, limit_B=None):
    """Sample up to cfg.max_new_tokens per row; returns (state', SampleOutput).

    active_B: rows to generate for (default all); inactive rows produce nothing and keep their state.
    limit_B: per-row budget <= max_new_tokens (default max_new_tokens); also capped by cache space.
    The loop exits as soon as every row is done. Every sampled token (incl. the final EOS / stop token)
    is written to the cache, so `state'.hidden` predicts the token after it.
    Randomness: step i uses uniform(fold_in(key, i), [B]): deterministic given the key (and sharding-
    independent).
    """
    b = state.batch_size
    n = cfg.max_new_tokens
    room = state.cache.max_len - state.cache.index
    limit = jnp.full((b,), n, jnp.int32) if limit_B is None else jnp.minimum(jnp.asarray(limit_B, jnp.int32), n)
    limit = jnp.minimum(limit, room)
    active = jnp.ones((b,), bool) if active_B is None else jnp.asarray(active_B).astype(bool)
    eos = jnp.asarray(cfg.eos_ids, jnp.int32) if cfg.eos_ids else None
    window = max(cfg.max_stop_len, 1)

    def cond(c):
        i, done = c[0], c[4]
        return (i < n) & ~jnp.all(done)

    def body(c):
        i, cache, hidden, pos, done, finish, lengths, toks, lps, lps_s, recent = c
        u = jax.random.uniform(jax.random.fold_in(key, i), (b,), jnp.float32)
        tok, lp, lp_s = select_tokens(model.logits(hidden).astype(jnp.float32), u, cfg)
        live = ~done
        tok = jnp.where(live, tok, cfg.pad_id)
        toks = jax.lax.dynamic_update_slice(toks, tok[:, None], (0, i))
        lps = jax.lax.dynamic_update_slice(lps, jnp.where(live, lp, 0.0)[:, None], (0, i))
        lps_s = jax.lax.dynamic_update_slice(lps_s, jnp.where(live, lp_s, 0.0)[:, None], (0, i))
        lengths = lengths + live
        hit_eos = live & jnp.any(tok[:, None] == eos[None], axis=1) if eos is not None else jnp.zeros_like(live)
        if cfg.stop_sequences:
            recent = push_recent(recent, tok)
            hit_stop = live & ~hit_eos & ends_with_pattern(recent, cfg.stop_sequences)
        else:
            hit_stop = jnp.zeros_like(live)
        finish = jnp.where(hit_eos, FINISH_EOS, jnp.where(hit_stop, FINISH_STOP, finish))
        done = done | hit_eos | hit_stop | (lengths >= limit)
        _, h, cache = model.extend(tok[:, None], pos[:, None], cache, token_mask_BT=live[:, None],
                                   compute_logits=False)
        hidden = jnp.where(live[:, None], h[:, 0].astype(hidden.dtype), hidden)
        return i + 1, cache, hidden, pos + live, done, finish, lengths, toks, lps, lps_s, recent

    init = (jnp.zeros((), jnp.int32), state.cache, state.hidden, state.next_pos, ~active | (limit <= 0),
            jnp.full((b,), FINISH_LENGTH, jnp.int32), jnp.zeros((b,), jnp.int32),
            jnp.full((b, n), cfg.pad_id, jnp.int32), jnp.zeros((b, n), jnp.float32),
            jnp.zeros((b, n), jnp.float32), jnp.full((b, window), -1, jnp.int32))
    _, cache, hidden, pos, _, finish, lengths, toks, lps, lps_s, _ = jax.lax.while_loop(cond, body, init)
    mask = jnp.arange(n)[None, :] < lengths[:, None]
    finish = jnp.where(active, finish, FINISH_LENGTH)
    out = SampleOutput(tokens=toks, logprobs=lps, sampling_logprobs=lps_s, mask=mask, lengths=lengths,
                       finish_reason=finish)
    return DecodeState(cache, hidden, pos), out


def rewind(state: DecodeState, seg_start, lengths_B, drop_B) -> DecodeState:
    """Invalidate the last drop_B tokens of each row's segment [seg_start, seg_start + lengths_B)."""
    slot = jnp.arange(state.cache.max_len)[None, :]
    end = seg_start + lengths_B[:, None]
    forget = (slot >= end - drop_B[:, None]) & (slot < end)
    cache = state.cache.replace(valid_BS=state.cache.valid_BS & ~forget)
    return DecodeState(cache, state.hidden, state.next_pos - drop_B)


def generate(model, tokens_NP, mask_NP, key, cfg: SamplingConfig, *, num_samples: int = 1,
             active_N=None, cache_dtype=None, constrain=None) -> SampleOutput:
    """Prefill N left-padded prompts once, repeat each K = num_samples times, decode N*K rows.

    `constrain(state) -> state` (optional) pins shardings of the decode state (data-parallel runs).
    """
    n, p = tokens_NP.shape
    state = empty_state(model, n, p + cfg.max_new_tokens, cache_dtype)
    if constrain is not None:
        state = constrain(state)
    state = append_tokens(model, state, tokens_NP, mask_NP)
    state = state.repeat(num_samples)
    active = None if active_N is None else jnp.repeat(jnp.asarray(active_N, bool), num_samples)
    if constrain is not None:
        state = constrain(state)
    _, out = decode(model, state, key, cfg, active_B=active)
    return out
