"""Shared fixtures for the sampling tests: one tiny Qwen3-style model, one Sampler (compiled programs are
shared across tests), a byte-level character tokenizer."""
import flax.nnx as nnx
import jax
import numpy as np
import pytest

from lpo_jax.models import ModelConfig, Transformer
from lpo_jax.sampling import Buckets, Sampler, SamplingConfig

GREEDY = SamplingConfig(max_new_tokens=8, greedy=True)   # shared: one compiled program for all files


class ByteTokenizer:
    """Character-level tokenizer over bytes 0..255 (ids == bytes): exact, no merges."""

    def encode(self, text):
        return list(text.encode("latin-1", errors="replace"))

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode("latin-1")


def make_tiny_model(seed=0):
    """2 layers, hidden 32, vocab 256, untied lm_head scaled x20: next-token entropy ~3.5 nats (varied
    samples, greedy text that does not just repeat the last token)."""
    model = Transformer(ModelConfig.tiny("qwen3"), rngs=nnx.Rngs(seed))
    model.lm_head.set_value(model.lm_head.get_value() * 20.0)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def sampler(tiny_model):
    # LLVM -O0 halves XLA:CPU compile time (the tests' main cost); numerics are the same up to rounding
    return Sampler(tiny_model, buckets=Buckets(batch=(4, 8, 16), length=(8, 16, 32, 64, 128)),
                   compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(scope="session")
def byte_tokenizer():
    return ByteTokenizer()


@pytest.fixture(scope="session")
def prompts():
    rng = np.random.default_rng(0)
    return [list(rng.integers(1, 256, size=n)) for n in (5, 9, 16, 12)]


@pytest.fixture(scope="session")
def greedy_out(sampler, prompts):
    return sampler.generate(prompts, 0, GREEDY)


_FORWARD = {}


def full_logprobs(model, pairs, length=128):
    """For [(context, generated)] pairs: log softmax(logits) of each generated token and the float64 logits
    at those positions, from one full causal forward over context + generated (right-padded to `length`)."""
    key = id(model)
    if key not in _FORWARD:
        graphdef, state = nnx.split(model)
        _FORWARD[key] = (jax.jit(lambda st, t: nnx.merge(graphdef, st)(t)), state)
    fwd, state = _FORWARD[key]
    seqs = np.zeros((len(pairs), length), np.int32)
    for i, (ctx, gen) in enumerate(pairs):
        seq = list(ctx) + list(gen)
        assert len(seq) <= length
        seqs[i, :len(seq)] = seq
    logits_all = np.asarray(fwd(state, seqs)).astype(np.float64)
    out = []
    for i, (ctx, gen) in enumerate(pairs):
        n = len(ctx)
        logits = logits_all[i, n - 1:n - 1 + len(gen)]
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        out.append((np.array([logp[j, t] for j, t in enumerate(gen)]), logits))
    return out
