"""Predictor features phi(H) from the policy: stop-gradient mean-pooled hidden states of every turn prefix.

One forward pass per episode gives the features of all its prefixes: with h the last hidden states
(`Transformer.hidden`), the pooled state of the prefix ending at token offset e is cumsum(h)[e - 1] / e.
Prefix s (s = 0..T-1) of an episode ends at ``turn_ends[s]`` (s = 0: the prompt alone). Turn features:
s and the number of non-empty observations among the first s turns (searches answered), both / T
(`predictor.features`). Host helpers turn `EpisodeRecord`s into the padded arrays (static N rows).
"""
from __future__ import annotations

import collections

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.trace.predictor import features as predictor_features


FEATURE_MODES = ("mean", "mean_last_len")


def make_prefix_hidden(graphdef, counter: collections.Counter | None = None, compiler_options: dict | None = None):
    """Jitted ``(params, tokens_NS, mask_NS, ends_NT) -> [N, T, 2D + 1]`` (float32, no gradient): the
    mean-pooled hidden state of each prefix, the hidden state of its last token, and log(1 + prefix length)
    / log(1 + S). `prefix_features` keeps the first D (mode "mean", the spec's phi) or all (mode
    "mean_last_len"). ``ends_NT``: prefix end offsets (tokens); a prefix with end 0 gets zeros."""

    def fn(params, tokens_NS, mask_NS, ends_NT):
        if counter is not None:
            counter["prefix_hidden"] += 1
        model = nnx.merge(graphdef, params)
        h = model.hidden(tokens_NS, attention_mask=mask_NS).astype(jnp.float32)
        h = jax.lax.stop_gradient(h) * mask_NS[..., None].astype(jnp.float32)
        cum = jnp.cumsum(h, axis=1)
        idx = jnp.clip(ends_NT - 1, 0, tokens_NS.shape[1] - 1)
        pooled = jnp.take_along_axis(cum, idx[..., None], axis=1) / jnp.maximum(ends_NT, 1)[..., None]
        last = jnp.take_along_axis(h, idx[..., None], axis=1)
        length = (jnp.log1p(ends_NT.astype(jnp.float32)) / jnp.log1p(float(tokens_NS.shape[1])))[..., None]
        out = jnp.concatenate([pooled, last, length], -1)
        return jnp.where((ends_NT > 0)[..., None], out, 0.0)

    return jax.jit(fn, **({"compiler_options": compiler_options} if compiler_options else {}))


def record_arrays(records, n_rows: int, length: int, max_turns: int, pad_id: int = 0):
    """Padded arrays of up to `n_rows` records (None entries -> empty rows):

    tokens [N, S] int32, mask [N, S] bool, ends [N, T] int32 (turn_ends[s], 0 when the prefix does not
    exist), searches [N, T] float32 (non-empty observations among the first s turns), exists [N, T] bool.
    """
    if len(records) > n_rows:
        raise ValueError(f"{len(records)} records do not fit {n_rows} static rows")
    tokens = np.full((n_rows, length), pad_id, np.int32)
    mask = np.zeros((n_rows, length), bool)
    mask[:, 0] = True  # empty rows attend to one pad token (no all-masked softmax); their ends stay 0
    ends = np.zeros((n_rows, max_turns), np.int32)
    searches = np.zeros((n_rows, max_turns), np.float32)
    for i, r in enumerate(records):
        if r is None:
            continue
        n = min(len(r.tokens), length)
        tokens[i, :n] = r.tokens[:n]
        mask[i, :n] = True
        k = min(len(r.turn_ends), max_turns)
        ends[i, :k] = np.minimum(r.turn_ends[:k], length)
        obs = np.cumsum([0] + [1 if o else 0 for o in r.observations])
        searches[i, :k] = obs[:k]
    return tokens, mask, ends, searches, ends > 0


def feature_dim(hidden_size: int, mode: str = "mean") -> int:
    """Width of the hidden-state part of phi for `mode` (the predictor adds 2 turn features)."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"feature mode must be one of {FEATURE_MODES}, got {mode!r}")
    return hidden_size if mode == "mean" else 2 * hidden_size + 1


def prefix_features(prefix_hidden, params, records, n_rows: int, length: int, max_turns: int,
                    pad_id: int = 0, mode: str = "mean"):
    """Predictor inputs for every prefix of `records`: (x [n_rows * T, F + 2], exists [n_rows, T]),
    F = `feature_dim(D, mode)`."""
    tokens, mask, ends, searches, exists = record_arrays(records, n_rows, length, max_turns, pad_id)
    h = prefix_hidden(params, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(ends))
    D = feature_dim((h.shape[-1] - 1) // 2, mode)
    h = h[..., :D]
    turn = jnp.broadcast_to(jnp.arange(max_turns, dtype=jnp.float32), (n_rows, max_turns))
    x = predictor_features(h.reshape(-1, D), turn.reshape(-1), jnp.asarray(searches).reshape(-1), max_turns)
    return x, exists


def prompt_records(tokenizer, prompts, encode=None):
    """Minimal record-like objects for prompts (prefix s = 0 only) so `prefix_features` scores them."""
    from lpo_jax.sampling.stop import encode_text

    encode = encode or (lambda text: encode_text(tokenizer, text))
    out = []
    for text in prompts:
        ids = encode(text)
        out.append(_PromptRecord(ids, [len(ids)], []))
    return out


_PromptRecord = collections.namedtuple("_PromptRecord", "tokens turn_ends observations")
