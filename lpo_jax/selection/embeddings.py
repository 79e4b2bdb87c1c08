"""Prompt embeddings for GPS: a pluggable embedder interface, WordLlama static embeddings (offline), a
deterministic hashing embedder (tests / offline fallback), and an on-disk cache keyed by the texts.

    embedder = get_embedder("wordllama")                   # or "hashing", or any Embedder
    E_ND = embed_texts(prompts, embedder, cache_dir="~/.cache/lpo_jax/embeddings")   # f32[N, d], once

An Embedder is any object with `name` (identifies the function; part of the cache key), `dim`, and
`__call__(texts) -> np.ndarray f32[n, dim]`. Embeddings are computed once per dataset on the host (numpy) and
passed to GPS as one array.
"""
import hashlib
import os
import re
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np


class Embedder(Protocol):
    name: str
    dim: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


class WordLlamaEmbedder:
    """WordLlama static token embeddings, average-pooled (the `wordllama` wheel ships the weights).

    Loads with no network: wordllama 0.4.0.post1's `WordLlama.load()` looks for the tokenizer config in
    `<package>/tokenizer/` (singular) while the wheel ships it in `<package>/tokenizers/`, so it falls
    back to a Hugging Face download. Its cache lookup is `<cache_dir>/tokenizers/<file>` and
    `<cache_dir>/weights/<file>`, so passing the installed package directory as `cache_dir` with
    `disable_download=True` finds both shipped files. normalize=True returns unit vectors.
    """

    def __init__(self, config: str = "l2_supercat", dim: int = 256, normalize: bool = True, batch_size: int = 64):
        self.config, self.dim, self.normalize, self.batch_size = config, int(dim), bool(normalize), batch_size
        self.name = f"wordllama-{config}-{self.dim}-{'unit' if normalize else 'raw'}"
        self._model = None

    def _load(self):
        if self._model is None:
            import wordllama
            from wordllama import WordLlama

            package_dir = Path(wordllama.__file__).parent
            try:
                self._model = WordLlama.load(self.config, dim=self.dim, cache_dir=package_dir,
                                             disable_download=True)
            except FileNotFoundError as err:
                raise FileNotFoundError(
                    f"WordLlama files for config={self.config!r}, dim={self.dim} are not in the installed wheel "
                    f"({package_dir}); the wheel ships l2_supercat at 256 dims (use those, or pre-download the "
                    "files into that directory)") from err
        return self._model

    def __call__(self, texts):
        texts = _check_texts(texts)
        out = self._load().embed(texts, norm=self.normalize, batch_size=self.batch_size)
        return np.asarray(out, np.float32).reshape(len(texts), self.dim)


class HashingEmbedder:
    """Deterministic feature hashing of words and character n-grams into `dim` signed buckets, L2-normalised.

    No weights, no network, stable across processes (blake2b, not Python's salted hash). Texts that share
    words or spellings land closer together; a cheap stand-in for tests and an offline fallback.
    """

    def __init__(self, dim: int = 256, ngram: int = 3, seed: int = 0):
        if dim < 1 or ngram < 1:
            raise ValueError(f"dim and ngram must be positive, got dim={dim}, ngram={ngram}")
        self.dim, self.ngram, self.seed = int(dim), int(ngram), int(seed)
        self.name = f"hashing-{self.dim}-{self.ngram}-{self.seed}"

    def _features(self, text):
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        yield from (f"w:{w}" for w in words)
        for w in words:
            padded = f"<{w}>"
            yield from (f"c:{padded[i:i + self.ngram]}" for i in range(max(1, len(padded) - self.ngram + 1)))

    def __call__(self, texts):
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        salt = self.seed.to_bytes(8, "little")
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8, salt=salt).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dim] += 1.0 if (value >> 63) else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def get_embedder(name: str = "wordllama", **kwargs) -> Embedder:
    """Embedder by name: "wordllama" (default; WordLlamaEmbedder) or "hashing" (HashingEmbedder)."""
    registry = {"wordllama": WordLlamaEmbedder, "hashing": HashingEmbedder}
    if name not in registry:
        raise ValueError(f"unknown embedder {name!r}; choose one of {sorted(registry)} or pass an Embedder")
    return registry[name](**kwargs)


def texts_key(texts: Sequence[str], embedder_name: str) -> str:
    """sha256 over the embedder name and every text (length-prefixed, so boundaries are unambiguous)."""
    h = hashlib.sha256(embedder_name.encode())
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def embed_texts(texts: Sequence[str], embedder: Embedder, cache_dir=None) -> np.ndarray:
    """f32[N, dim] embeddings of `texts`; with cache_dir, read from / written to `<name>-<hash>.npy` there.

    The cache file is keyed by the embedder's name and the exact texts (order included), and written
    atomically (temporary file + rename), so concurrent or interrupted runs never leave a partial file.
    """
    texts = _check_texts(texts)
    path = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
        path = cache_dir / f"{embedder.name}-{texts_key(texts, embedder.name)[:32]}.npy"
        if path.exists():
            cached = np.load(path)
            if cached.shape == (len(texts), embedder.dim):
                return cached
    out = np.asarray(embedder(texts), np.float32)
    if out.shape != (len(texts), embedder.dim):
        raise ValueError(f"embedder {embedder.name!r} returned shape {out.shape}, expected ({len(texts)}, "
                         f"{embedder.dim})")
    if path is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, path)
    return out


def _check_texts(texts):
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings (wrap a single prompt in a list)")
    return list(texts)
