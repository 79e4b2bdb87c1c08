"""Sharding on 8 fake CPU devices: logical-axis rules, meshes, and sharded forward == single-device forward."""
import functools

import flax.nnx as nnx
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from lpo_jax.models import (KVCache, ModelConfig, batch_sharding, cache_shardings, create_model, extend,
                            forward, load_hf, logical_to_spec, model_shardings, positions_from_mask,
                            shard_model)
from lpo_jax.training.mesh import make_mesh, mesh_shape
from models_testlib import jit_forward, max_err_real, parity_batch

CFG = ModelConfig.tiny("qwen2", num_layers=1)   # biases + tied embeddings: every param kind but q/k norm
B, T = 8, 8


def test_eight_fake_devices():
    assert jax.device_count() == 8


@pytest.fixture(scope="module")
def base():
    model = create_model(CFG, seed=0)
    tokens = np.asarray(jax.random.randint(jax.random.key(0), (B, T), 0, CFG.vocab_size), np.int32)
    mask = np.ones((B, T), np.int32)
    mask[1, :3] = mask[6, :5] = 0
    reference = np.asarray(jit_forward(*nnx.split(model), tokens, mask))
    return model, tokens, mask, reference


def _sharded_forward(model, mesh, tokens, mask):
    graphdef, state = nnx.split(model)
    data = batch_sharding(mesh, tokens.shape)
    fn = jax.jit(functools.partial(forward, graphdef), in_shardings=(model_shardings(model, mesh), data, data))
    return fn(state, jax.device_put(tokens, data), jax.device_put(mask, data))


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 8, 1), (1, 2, 4), (8, 1, 1)])
def test_sharded_forward_equals_single_device(base, shape):
    model, tokens, mask, reference = base
    mesh = make_mesh(*shape)
    sharded = shard_model(model, mesh)
    data, fsdp, tensor = shape
    up = sharded.layers[0].mlp.up_proj[...]
    assert up.sharding.spec == P("fsdp" if fsdp > 1 else None, "tensor" if tensor > 1 else None)
    kv_spec = sharded.layers[0].attn.k_proj[...].sharding.spec
    # 2 KV heads shard over tensor=2 but not tensor=4 (replicated instead of an invalid split)
    assert kv_spec[1] == ("tensor" if tensor == 2 else None)
    logits = _sharded_forward(sharded, mesh, tokens, mask)
    assert logits.sharding.spec[0] == batch_sharding(mesh, tokens.shape).spec[0]   # batch stays sharded
    assert max_err_real(logits, reference, mask) < 1e-5


def test_sharded_kv_cache_decode_equals_single_device(base):
    model, tokens, mask, reference = base
    mesh = make_mesh(2, 2, 2)
    sharded = shard_model(model, mesh)
    graphdef, state = nnx.split(sharded)
    cache = KVCache.init(CFG, B, 12)
    cache = jax.device_put(cache, cache_shardings(cache, mesh))
    expected = NamedSharding(mesh, P(("data", "fsdp"), "tensor", None, None))
    assert cache.k[0].sharding.is_equivalent_to(expected, 4)
    positions = np.asarray(positions_from_mask(mask))
    step = jax.jit(functools.partial(extend, graphdef), donate_argnums=3)
    logits, _, cache = step(state, tokens[:, :6], positions[:, :6], cache, mask[:, :6])
    outs = [np.asarray(logits)]
    for t in range(6, T):
        logits, _, cache = step(state, tokens[:, t:t + 1], positions[:, t:t + 1], cache, mask[:, t:t + 1])
        outs.append(np.asarray(logits))
    assert cache.k[-1].sharding.is_equivalent_to(expected, 4)   # layout kept: donation updates in place
    assert max_err_real(np.concatenate(outs, 1), reference, mask) < 1e-5


def test_load_hf_places_each_param_in_its_sharding(hf_checkpoints):
    path, ref = hf_checkpoints[("qwen2", "fp32_sharded")]
    mesh = make_mesh(2, 2, 2)
    model = load_hf(path, mesh=mesh)
    assert model.mesh is mesh
    for path_, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        array = var.get_value()
        expected = logical_to_spec(var.get_metadata()["logical_axes"], array.shape, mesh)
        assert array.sharding.is_equivalent_to(NamedSharding(mesh, expected), array.ndim), path_
    q = model.layers[0].attn.q_proj[...]
    assert q.addressable_shards[0].data.shape == (q.shape[0] // 2, q.shape[1] // 2, q.shape[2])
    tokens, mask = parity_batch()
    assert max_err_real(jit_forward(*nnx.split(model), tokens, mask), ref, mask) < 1e-4


def test_create_model_directly_sharded():
    mesh = make_mesh(1, 4, 2)
    model = create_model(CFG, seed=1, mesh=mesh)
    embed = model.embed[...]
    assert embed.sharding.spec == P("tensor", "fsdp")
    assert embed.addressable_shards[0].data.shape == (CFG.vocab_size // 2, CFG.hidden_size // 4)
    values = np.asarray(embed)
    assert abs(values.std() - 0.02) < 0.002 and abs(values.mean()) < 0.002
    np.testing.assert_array_equal(np.asarray(model.final_norm.weight[...]), 1.0)


# ------------------------------------------------------------------------------------------ rules / mesh
def test_logical_to_spec_rules():
    mesh = make_mesh(2, 2, 2)
    assert logical_to_spec(("embed", "mlp"), (32, 64), mesh) == P("fsdp", "tensor")
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), (32, 3, 8), mesh) == P("fsdp", None, None)
    assert logical_to_spec(("batch", None), (8, 5), mesh) == P(("data", "fsdp"), None)
    assert logical_to_spec(("batch", None), (2, 5), mesh) == P("data", None)   # 2 rows: fsdp dropped
    # a mesh axis is used at most once per array
    assert logical_to_spec(("mlp", "vocab"), (64, 64), mesh) == P("tensor", None)
    custom = {"embed": ("fsdp", "tensor"), "mlp": None}
    assert logical_to_spec(("embed", "mlp"), (32, 64), mesh, custom) == P(("fsdp", "tensor"), None)
    with pytest.raises(ValueError, match="no sharding rule for logical axis 'experts'"):
        logical_to_spec(("experts",), (4,), mesh)
    with pytest.raises(ValueError, match="do not match array rank"):
        logical_to_spec(("embed",), (4, 4), mesh)


def test_make_mesh():
    mesh = make_mesh(2, -1, 2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert dict(make_mesh().shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert dict(make_mesh(tensor=2, devices=jax.devices()[:4]).shape) == {"data": 1, "fsdp": 2, "tensor": 2}
    assert mesh_shape(16, data=2, fsdp=4, tensor=2) == (2, 4, 2)
    with pytest.raises(ValueError, match="3 devices cannot be split"):
        mesh_shape(3, tensor=2)
    with pytest.raises(ValueError, match="but 8 devices"):
        make_mesh(2, 2, 1)
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        make_mesh(-1, -1, 1)
