"""Prompt embedders (WordLlama offline, hashing) and the on-disk embedding cache."""
import numpy as np
import pytest

from lpo_jax.selection import embeddings as emb

_TEXTS = ["What is 2 + 3?", "Compute 2 plus 3.", "Describe the causes of the French revolution.",
          "What is 2 + 4?"]


def _dist(e, i, j):
    return float(np.linalg.norm(e[i] - e[j]))


@pytest.fixture(scope="module")
def wordllama():
    return emb.get_embedder("wordllama")


def test_wordllama_embeds_offline(wordllama, monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("WordLlama tried to use the network")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(requests.Session, "request", no_network)
    e = wordllama(_TEXTS)
    assert e.shape == (4, 256) and e.dtype == np.float32 and np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # near-paraphrases / near-duplicates are closer than an unrelated prompt
    assert _dist(e, 0, 3) < _dist(e, 0, 2) and _dist(e, 0, 1) < _dist(e, 0, 2)
    assert wordllama.name == "wordllama-l2_supercat-256-unit" and wordllama.dim == 256


def test_hashing_embedder_is_deterministic_normalised_and_similarity_aware():
    a, b = emb.HashingEmbedder(dim=64), emb.HashingEmbedder(dim=64)
    e = a(_TEXTS)
    np.testing.assert_array_equal(e, b(_TEXTS))  # same across instances (no salted hash)
    assert e.shape == (4, 64) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert _dist(e, 0, 3) < _dist(e, 0, 2)
    assert not np.array_equal(emb.HashingEmbedder(dim=64, seed=1)(_TEXTS), e)
    np.testing.assert_array_equal(a([""]), np.zeros((1, 64), np.float32))


class _CountingEmbedder:
    name, dim = "counting-3", 3

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.asarray([[len(t), t.count(" "), 1.0] for t in texts], np.float32)


def test_cache_is_keyed_by_texts_and_embedder(tmp_path):
    counting = _CountingEmbedder()
    first = emb.embed_texts(_TEXTS, counting, cache_dir=tmp_path)
    again = emb.embed_texts(_TEXTS, counting, cache_dir=tmp_path)
    assert counting.calls == 1  # second call read the .npy file
    np.testing.assert_array_equal(first, again)
    emb.embed_texts(_TEXTS[::-1], counting, cache_dir=tmp_path)  # order is part of the key
    emb.embed_texts(["a", "b c"], counting, cache_dir=tmp_path)
    assert counting.calls == 3
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 3 and all(f.startswith("counting-3-") and f.endswith(".npy") for f in files)
    assert emb.texts_key(["ab", "c"], "x") != emb.texts_key(["a", "bc"], "x")  # boundaries are unambiguous
    assert emb.texts_key(["a"], "x") != emb.texts_key(["a"], "y")
    np.testing.assert_array_equal(emb.embed_texts(_TEXTS, counting), first)  # no cache_dir: plain compute


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(TypeError, match="sequence of strings"):
        emb.embed_texts("one prompt", emb.HashingEmbedder())
    with pytest.raises(TypeError, match="sequence of strings"):
        emb.HashingEmbedder()(["ok", 3])
    with pytest.raises(ValueError, match="unknown embedder"):
        emb.get_embedder("bert")

    class Broken(_CountingEmbedder):
        dim = 4  # returns 3 columns

    with pytest.raises(ValueError, match="expected"):
        emb.embed_texts(["a"], Broken(), cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not in the installed wheel"):
        emb.WordLlamaEmbedder(dim=1024)(["a"])
