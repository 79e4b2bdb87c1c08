"""Stop strings: token patterns matched on device, exact string cut on the host.

A stop string such as `</search>` can be produced by several token sequences (`</search>` as one token,
`</` + `search` + `>`, ` </search>` merged with a space, ...). On device we match the common ones: for a
few preceding contexts ("", " ", "\\n", ...) we tokenize context + string and keep the shortest token
suffix whose text contains the string (`stop_token_patterns`). A row stops as soon as its generated tokens
end with one of these patterns. On the host, `truncate_at_stop` finds the earliest occurrence of any stop
string in the decoded text, keeps the shortest token prefix whose text contains it, and cuts the text right
after the string. A tokenization missed on device only costs extra decode steps: the host cut still applies.
If a stop string ends inside a token (e.g. token `>\\n`), the text is cut at the string while the token
sequence keeps that whole token.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class TextTokenizer(Protocol):
    """What the sampler and agent loop need from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens (HF tokenizers, `tokenizers.Tokenizer` or a plain encode)."""
    for kwargs in ({"add_special_tokens": False}, {}):
        try:
            ids = tokenizer.encode(text, **kwargs)
            break
        except TypeError:
            continue
    else:
        raise TypeError(f"tokenizer {type(tokenizer).__name__} has no usable encode(text)")
    ids = getattr(ids, "ids", ids)                              # tokenizers.Encoding
    if len(ids) and isinstance(ids[0], (list, tuple, np.ndarray)):
        raise TypeError("tokenizer.encode returned a batch for one string; pass a per-string encoder")
    return [int(i) for i in ids]


def decode_tokens(tokenizer, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    try:
        return tokenizer.decode(ids, skip_special_tokens=False)
    except TypeError:
        return tokenizer.decode(ids)


DEFAULT_CONTEXTS = ("", " ", "\n", "a", "a ", ". ", ">", "\n\n")


def stop_token_patterns(tokenizer, stop_strings: Sequence[str],
                        contexts: Sequence[str] = DEFAULT_CONTEXTS) -> tuple[tuple[int, ...], ...]:
    """Token-id patterns whose appearance at the end of the generated tokens means a stop string appeared."""
    if isinstance(stop_strings, str):
        raise TypeError("stop_strings must be a sequence of strings, e.g. ['</answer>'], not one string")
    patterns = []
    for s in stop_strings:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
        for ctx in contexts:
            ids = encode_text(tokenizer, ctx + s)
            for k in range(1, len(ids) + 1):
                if s in decode_tokens(tokenizer, ids[-k:]):
                    patterns.append(tuple(ids[-k:]))
                    break
    return tuple(dict.fromkeys(patterns))


def pattern_arrays(patterns: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned patterns [P, L] (int32, -2 = don't care) and their lengths [P] (numpy constants)."""
    max_len = max(len(p) for p in patterns)
    arr = np.full((len(patterns), max_len), -2, np.int32)
    for i, p in enumerate(patterns):
        arr[i, max_len - len(p):] = p
    return arr, np.array([len(p) for p in patterns], np.int32)


def push_recent(recent_BL: jax.Array, tok_B: jax.Array) -> jax.Array:
    """Shift the window of the last L generated tokens left and append tok (initial fill: -1)."""
    return jnp.concatenate([recent_BL[:, 1:], tok_B[:, None].astype(recent_BL.dtype)], axis=1)


def ends_with_pattern(recent_BL: jax.Array, patterns: tuple) -> jax.Array:
    """bool [B]: the window (last L generated tokens, -1 before generation) ends with some pattern."""
    arr, _ = pattern_arrays(patterns)
    arr = jnp.asarray(arr)
    eq = (recent_BL[:, None, :] == arr[None]) | (arr[None] == -2)
    return jnp.any(jnp.all(eq, axis=-1), axis=-1)


def cut_text_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, str | None]:
    """(text cut right after the earliest stop string, that string or None)."""
    best, found = None, None
    for s in stop_strings:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best):
            best, found = i + len(s), s
    return (text, None) if found is None else (text[:best], found)


def truncate_at_stop(tokenizer, ids: Sequence[int], stop_strings: Sequence[str]) -> tuple[int, str, str | None]:
    """(number of tokens to keep, text cut at the stop string, stop string or None).

    Keeps the shortest token prefix whose decoded text contains the earliest stop string (binary search
    over prefix lengths, O(log n) decodes).
    """
    ids = list(ids)
    text = decode_tokens(tokenizer, ids)
    cut, found = cut_text_at_stop(text, stop_strings)
    if found is None:
        return len(ids), text, None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if cut_text_at_stop(decode_tokens(tokenizer, ids[:mid]), stop_strings)[1] is not None:
            hi = mid
        else:
            lo = mid + 1
    return lo, cut, found
