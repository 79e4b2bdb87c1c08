"""Sampler on a tiny model: log-probs vs a full forward, groups, EOS / stop, prefix continuation, buckets
(no retrace), determinism, data-parallel sharding on 8 fake devices."""
import jax
import numpy as np
import pytest

from conftest import GREEDY, full_logprobs, make_tiny_model
from lpo_jax.sampling import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Sampler, SamplingConfig

RICH = SamplingConfig(max_new_tokens=8, temperature=0.8, top_k=40, top_p=0.95)
K = 2


@pytest.fixture(scope="module")
def rich_out(sampler, prompts):
    return sampler.generate(prompts, 7, RICH, num_samples=K)


def _np_filtered_logp(logits, cfg):
    """log-probs of the sampling distribution (temperature, top-k, top-p) computed in float64 numpy."""
    z = logits / cfg.temperature
    order = np.argsort(-z, kind="stable")
    keep = np.zeros_like(z, bool)
    keep[order[: cfg.top_k]] = True
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    sp = p[order]
    nucleus = (np.cumsum(sp) - sp) < cfg.top_p
    keep2 = np.zeros_like(keep)
    keep2[order[nucleus]] = True
    q = np.where(keep2, p, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(q / q.sum()), keep2


def test_greedy_output_shapes_and_logprobs(tiny_model, greedy_out, prompts):
    out = greedy_out
    assert out.tokens.shape == out.logprobs.shape == out.mask.shape == (4, 8)
    np.testing.assert_array_equal(out.lengths, 8)
    np.testing.assert_array_equal(out.finish_reason, FINISH_LENGTH)
    ref = full_logprobs(tiny_model, [(p, out.tokens[i]) for i, p in enumerate(prompts)])
    for i, (logp, logits) in enumerate(ref):
        np.testing.assert_array_equal(out.tokens[i], np.argmax(logits, -1))
        np.testing.assert_allclose(out.logprobs[i], logp, atol=1e-5)
    np.testing.assert_array_equal(out.sampling_logprobs, 0.0)


def test_sampled_logprobs_equal_full_forward(tiny_model, rich_out, prompts):
    """Per-token log-probs (temperature-1 policy) match a full forward within 1e-5 (fp32); the sampling
    log-probs match the tempered top-k/top-p distribution, and every token lies inside its masks."""
    out = rich_out
    assert out.tokens.shape == (len(prompts) * K, 8)
    pairs = [(prompts[r // K], out.tokens[r]) for r in range(len(out.tokens))]
    for r, (logp, logits) in enumerate(full_logprobs(tiny_model, pairs)):
        np.testing.assert_allclose(out.logprobs[r], logp, atol=1e-5)
        for t in range(8):
            ref_logq, keep = _np_filtered_logp(logits[t], RICH)
            assert keep[out.tokens[r, t]], "sampled token outside the top-k / top-p set"
            np.testing.assert_allclose(out.sampling_logprobs[r, t], ref_logq[out.tokens[r, t]], atol=1e-4)


def test_groups_share_prompt_but_differ(rich_out):
    tok = rich_out.tokens.reshape(-1, K, 8)
    assert any((g[0] != g[1]).any() for g in tok), "the K samples of a prompt should not all coincide"


def test_deterministic_given_key(sampler, prompts, rich_out):
    again = sampler.generate(prompts, 7, RICH, num_samples=K)
    np.testing.assert_array_equal(again.tokens, rich_out.tokens)
    np.testing.assert_array_equal(again.logprobs, rich_out.logprobs)
    other = sampler.generate(prompts, 8, RICH, num_samples=K)
    assert (other.tokens != rich_out.tokens).any()


def test_eos_and_stop_sequences(sampler, prompts, greedy_out):
    """Row stops at the first EOS id / completed stop pattern; tokens after the end are pad, mask 0."""
    g = greedy_out.tokens
    eos = int(g[0, 3])
    stop = (int(g[1, 4]), int(g[1, 5]))
    cfg = GREEDY.replace(eos_ids=(eos,), stop_sequences=(stop,), pad_id=0)
    out = sampler.generate(prompts, 0, cfg)
    for r in range(4):
        want_len, want_finish = 8, FINISH_LENGTH
        for t in range(8):
            if g[r, t] == eos:
                want_len, want_finish = t + 1, FINISH_EOS
                break
            if t >= 1 and (g[r, t - 1], g[r, t]) == stop:
                want_len, want_finish = t + 1, FINISH_STOP
                break
        assert out.lengths[r] == want_len and out.finish_reason[r] == want_finish, r
        np.testing.assert_array_equal(out.tokens[r, :want_len], g[r, :want_len])
        np.testing.assert_array_equal(out.tokens[r, want_len:], 0)
        np.testing.assert_array_equal(out.mask[r], np.arange(8) < want_len)
        np.testing.assert_array_equal(out.logprobs[r, want_len:], 0.0)
    assert out.finish_reason[0] == FINISH_EOS and out.lengths[0] <= 4
    assert out.finish_reason[1] in (FINISH_EOS, FINISH_STOP) and out.lengths[1] <= 6


def test_prefix_continuation(sampler, prompts, greedy_out):
    """Continuing from prompt + the first 3 generated tokens reproduces the rest of the greedy output."""
    prefixes = [list(p) + list(greedy_out.tokens[i, :3]) for i, p in enumerate(prompts) if len(p) + 3 <= 16]
    rows = [i for i, p in enumerate(prompts) if len(p) + 3 <= 16]
    out = sampler.generate(prefixes, 0, GREEDY)
    np.testing.assert_array_equal(out.tokens[:, :5], greedy_out.tokens[rows, 3:])
    np.testing.assert_allclose(out.logprobs[:, :5], greedy_out.logprobs[rows, 3:], atol=1e-5)


def test_no_retrace_within_buckets(sampler, greedy_out):
    """Different contents, lengths (<= 16) and batch sizes (<= 4) reuse the compiled program."""
    before = sampler.trace_counts["generate"]
    rng = np.random.default_rng(5)
    for n in (1, 3, 4):
        batch = [list(rng.integers(1, 256, size=rng.integers(9, 17))) for _ in range(n)]
        out = sampler.generate(batch, int(rng.integers(100)), GREEDY)
        assert out.tokens.shape == (n, 8)
    assert sampler.trace_counts["generate"] == before


def test_bad_inputs_raise_clear_errors(sampler):
    with pytest.raises(ValueError, match="non-empty"):
        sampler.generate([], 0, GREEDY)
    with pytest.raises(TypeError, match="encode"):
        sampler.generate(["hello"], 0, GREEDY)
    with pytest.raises(ValueError, match="empty"):
        sampler.generate([[]], 0, GREEDY)
    with pytest.raises(ValueError, match="largest bucket"):
        sampler.generate([[1] * 200], 0, GREEDY)
    with pytest.raises(ValueError, match="num_samples"):
        sampler.generate([[1, 2]], 0, GREEDY, num_samples=0)


def test_sharded_generation_equals_single_device(sampler, prompts, rich_out):
    """Params sharded as in training (fsdp x tensor), batch over (data, fsdp) on 8 fake CPU devices."""
    from lpo_jax.models import shard_model
    devices = np.array(jax.devices()[:8]).reshape(2, 2, 2)
    mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "tensor"),
                             axis_types=(jax.sharding.AxisType.Auto,) * 3)
    model = shard_model(make_tiny_model(), mesh)
    sharded = Sampler(model, mesh=mesh, buckets=sampler.buckets, compiler_options=sampler.compiler_options)
    assert any(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(sharded.state))
    out = sharded.generate(prompts, 7, RICH, num_samples=K)
    np.testing.assert_array_equal(out.tokens, rich_out.tokens)
    np.testing.assert_allclose(out.logprobs, rich_out.logprobs, atol=1e-5)
    np.testing.assert_array_equal(out.finish_reason, rich_out.finish_reason)


def test_params_cast_once_to_compute_dtype_bit_identical():
    """fp32 master params with bf16 compute: the Sampler keeps a bf16 copy (half the bytes per decode step)
    and generates exactly what the uncast fp32 params give (the model casts each weight before use)."""
    import dataclasses

    import flax.nnx as nnx
    import jax.numpy as jnp

    from lpo_jax.models import ModelConfig, Transformer
    cfg = dataclasses.replace(ModelConfig.tiny("qwen3"), dtype="bfloat16", param_dtype="float32")
    model = Transformer(cfg, rngs=nnx.Rngs(3))
    opts = {"xla_backend_optimization_level": 0}
    cast = Sampler(model, compiler_options=opts)
    leaves = jax.tree.leaves(cast.state)
    assert leaves and all(x.dtype == jnp.bfloat16 for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))
    uncast = Sampler(model, compiler_options=opts)
    uncast.state = nnx.split(model)[1]          # bypass set_state: the fp32 master params as they are
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(uncast.state))
    prompts = [[5, 9, 17], [3, 4, 5, 6, 7, 8]]
    a = cast.generate(prompts, 11, RICH, num_samples=2)
    b = uncast.generate(prompts, 11, RICH, num_samples=2)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
