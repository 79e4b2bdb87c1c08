"""The pure train step: accumulation equals the full batch, sharded equals single-device, non-finite is skipped."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lpo_jax.models import ModelConfig, Transformer
from lpo_jax.models.sharding import batch_sharding, state_shardings
from lpo_jax.objectives import get_objective
from lpo_jax.training.mesh import make_mesh
from lpo_jax.training.state import init_train_state, make_optimizer, split_model
from lpo_jax.training.step import TrainBatch, batch_logprobs, make_train_step

B, K, P, T, V = 8, 2, 4, 6, 64


@pytest.fixture(scope="module")
def setup():
    cfg = ModelConfig(family="qwen3", vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
    graphdef, params = split_model(Transformer(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, V, (B, K, P + T)), jnp.int32)
    attn = np.ones((B, K, P + T), np.int32)
    attn[:, :, :1] = 0                                       # left padding on the prompt
    mask = np.ones((B, K, T), np.float32)
    mask[:, :, 4:] = 0                                       # short responses
    mask[1] = 0                                              # a dropped group (DAPO padding)
    mask[3, 0, 2:] = 0                                       # uneven lengths within a group
    rewards = jnp.asarray(rng.integers(0, 2, (B, K)), jnp.float32)
    old = batch_logprobs(graphdef, params, tokens, jnp.asarray(attn), P) - 0.05
    return graphdef, params, tokens, jnp.asarray(attn), jnp.asarray(mask), rewards, old


def _step(setup, objective_name, micro_batches=1, lr=1e-2, sgd=False):
    """(step fn, fresh state, batch). SGD makes the update linear in the gradient, so params compare grads."""
    graphdef, params, tokens, attn, mask, rewards, old = setup
    objective = get_objective(objective_name)
    optimizer = optax.sgd(lr) if sgd else make_optimizer(lr=lr, grad_clip=0.0)
    loss = functools.partial(objective.loss, cfg=objective.config)
    step = make_train_step(graphdef, loss, optimizer, prompt_len=P, micro_batches=micro_batches,
                           token_weighted=objective.config.loss_agg == "token-mean")
    targets = objective.prepare(rewards, mask, objective.config)
    batch = TrainBatch(tokens, attn, mask, old, None, targets)
    return step, init_train_state(params, optimizer, jax.random.PRNGKey(0)), batch


@pytest.mark.parametrize("objective", ["lpo_fwd", "grpo", "dapo"])
def test_micro_batch_accumulation_equals_full_batch(setup, objective):
    step, state, batch = _step(setup, objective, sgd=True)
    full, m_full = jax.jit(step)(state, batch)
    step4, state4, _ = _step(setup, objective, micro_batches=4, sgd=True)
    acc, m_acc = jax.jit(step4)(state4, batch)
    chex.assert_trees_all_close(acc.params, full.params, atol=1e-7, rtol=1e-5)
    assert not np.allclose(np.asarray(jax.tree.leaves(full.params)[0]), np.asarray(jax.tree.leaves(state.params)[0]))
    np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-5, atol=1e-7)
    assert float(m_full["skipped"]) == 0.0 and int(full.step) == 1


def test_sharded_step_equals_single_device(setup):
    step, state, batch = _step(setup, "lpo_fwd", sgd=True)
    ref, ref_metrics = jax.jit(step)(state, batch)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded_state = jax.device_put(state, jax.tree.map(lambda x: jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()), state))
    shardings = state_shardings(state.params, mesh)
    sharded_state = sharded_state.replace(params=jax.device_put(state.params, shardings))
    sharded_batch = jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, x.shape)), batch)
    out, metrics = jax.jit(step)(sharded_state, sharded_batch)
    assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(sharded_batch))
    assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded_state.params))
    chex.assert_trees_all_close(out.params, ref.params, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-4, atol=1e-6)


def test_nonfinite_update_is_skipped(setup):
    step, state, batch = _step(setup, "grpo", lr=float("inf"))
    before = jax.tree.map(np.asarray, state.params)
    out, metrics = jax.jit(step)(state, batch)
    assert float(metrics["skipped"]) == 1.0 and int(out.step) == 0
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, out.params), before)
    bad = batch.replace(old_logp_BKT=batch.old_logp_BKT.at[0, 0, 0].set(jnp.nan))
    step2, state2, _ = _step(setup, "grpo")
    out2, metrics2 = jax.jit(step2)(state2, bad)
    assert float(metrics2["skipped"]) == 1.0 and int(out2.step) == 0


@pytest.mark.parametrize("chunk", [3, 4])        # T = 6: 3 divides it, 4 needs the padded last chunk
@pytest.mark.parametrize("tied", [False, True])
def test_chunked_logits_equal_full_logits_in_value_and_gradient(chunk, tied):
    """logits_chunk only changes peak memory: log-probs, entropies and their gradients are the same."""
    from lpo_jax.training.step import completion_logprobs
    cfg = ModelConfig(family="qwen3", vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=1,
                      num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, tie_embeddings=tied)
    graphdef, params = split_model(Transformer(cfg, rngs=nnx.Rngs(1)))
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, V, (3, P + T)), jnp.int32)
    attn = jnp.ones((3, P + T), jnp.int32)
    w = jnp.asarray(np.random.default_rng(2).normal(size=(3, T)), jnp.float32)

    def f(params, logits_chunk):
        logp, ent = completion_logprobs(nnx.merge(graphdef, params), tokens, attn, P, with_entropy=True,
                                        logits_chunk=logits_chunk)
        return (w * logp).sum() + (w * ent).sum(), (logp, ent)

    (full, (lp_full, ent_full)), g_full = jax.jit(jax.value_and_grad(f, has_aux=True), static_argnums=1)(params, 0)
    (part, (lp_part, ent_part)), g_part = jax.jit(jax.value_and_grad(f, has_aux=True), static_argnums=1)(params,
                                                                                                       chunk)
    chex.assert_shape(lp_part, (3, T))
    np.testing.assert_allclose(lp_part, lp_full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ent_part, ent_full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part, full, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_part, g_full)
