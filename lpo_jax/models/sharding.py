"""Logical-axis sharding: Param metadata `logical_axes` -> PartitionSpec on a ('data','fsdp','tensor') mesh.

Rules map each logical axis name to a mesh axis (or a tuple of mesh axes, or None = replicated). A mesh
axis is dropped for a dimension when it is absent from the mesh, has size 1, does not divide the
dimension (e.g. 2 KV heads on tensor=4), or is already used by an earlier dimension of the same array;
so every config works on every mesh, degrading to replication where it must.
"""
from __future__ import annotations

import math
from typing import Mapping

import flax.nnx as nnx
import jax
from jax.sharding import NamedSharding, PartitionSpec

from lpo_jax.models.config import ModelConfig

AxisRules = Mapping[str, "str | tuple[str, ...] | None"]

DEFAULT_RULES: dict = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "length": None,
}


def logical_to_spec(axes, shape, mesh: jax.sharding.Mesh, rules: AxisRules | None = None) -> PartitionSpec:
    """PartitionSpec for an array of `shape` whose dims are named by logical `axes`."""
    rules = DEFAULT_RULES if rules is None else rules
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match array rank {len(shape)}")
    used: set[str] = set()
    spec = []
    for name, dim in zip(axes, shape):
        if name is not None and name not in rules:
            raise ValueError(f"no sharding rule for logical axis {name!r}; rules cover {sorted(rules)}")
        target = rules.get(name) if name is not None else None
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        chosen = []
        for axis in targets:
            size = mesh.shape.get(axis, 1)
            if axis in used or size == 1 or dim % (math.prod(mesh.shape[a] for a in chosen) * size):
                continue
            chosen.append(axis)
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec)


def _axes_of(variable) -> tuple:
    axes = variable.get_metadata().get("logical_axes")
    if axes is None:
        raise ValueError(f"variable {type(variable).__name__} has no logical_axes metadata")
    return axes


def state_shardings(state: nnx.State, mesh, rules: AxisRules | None = None) -> nnx.State:
    """NamedSharding for every Variable of an (abstract or concrete) nnx.State, same tree structure."""
    def one(variable):
        shape = variable.get_value().shape
        return variable.replace(NamedSharding(mesh, logical_to_spec(_axes_of(variable), shape, mesh, rules)))
    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def model_shardings(model: nnx.Module, mesh, rules: AxisRules | None = None) -> nnx.State:
    """Shardings of nnx.state(model), for jax.jit in_shardings/out_shardings."""
    return state_shardings(nnx.state(model), mesh, rules)


def shard_model(model: nnx.Module, mesh, rules: AxisRules | None = None) -> nnx.Module:
    """Move an existing model's params into their NamedShardings (in place) and attach the mesh."""
    graphdef, state = nnx.split(model)
    shardings = state_shardings(state, mesh, rules)
    state = jax.device_put(state, shardings)
    model = nnx.merge(graphdef, state)
    if hasattr(model, "mesh"):
        model.mesh = mesh
    return model


def create_model(cfg: ModelConfig, *, seed: int = 0, mesh=None, rules: AxisRules | None = None):
    """A randomly initialised Transformer.

    Without `mesh`: plain eager `Transformer(cfg, rngs=nnx.Rngs(seed))`. With `mesh`: one jitted init
    whose out_shardings are the params' NamedShardings, so each device computes only its own shards (no
    unsharded copy anywhere) and the model gets batch-sharding constraints. (The two draw different
    values for the same seed: see transformer._normal_init.)
    """
    from lpo_jax.models.transformer import Transformer

    if mesh is None:
        return Transformer(cfg, rngs=nnx.Rngs(seed))
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(seed), mesh=mesh))
    graphdef, abstract_state = nnx.split(abstract)
    shardings = state_shardings(abstract_state, mesh, rules)

    def init():
        return nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed), mesh=mesh))

    state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def batch_sharding(mesh, shape, rules: AxisRules | None = None) -> NamedSharding:
    """Sharding of a batch array: leading dim over the 'batch' rule (default ('data', 'fsdp')) where the
    axes divide it, other dims replicated. `shape`: the array shape (or just its rank: no divisibility check)."""
    if isinstance(shape, int):
        rules = DEFAULT_RULES if rules is None else rules
        target = rules.get("batch")
        axes = tuple(a for a in ((target,) if isinstance(target, str) else tuple(target or ())) if a in mesh.shape)
        return NamedSharding(mesh, PartitionSpec(axes or None, *([None] * (shape - 1))))
    axes = ("batch",) + (None,) * (len(shape) - 1)
    return NamedSharding(mesh, logical_to_spec(axes, tuple(shape), mesh, rules))


def cache_shardings(cache, mesh, rules: AxisRules | None = None):
    """Shardings for a KVCache: batch over ('data','fsdp'), KV heads over 'tensor' where they divide."""
    def kv(x):
        return NamedSharding(mesh, logical_to_spec(("batch", "kv_heads", "length", "head_dim"), x.shape,
                                                   mesh, rules))
    return cache.replace(k=tuple(map(kv, cache.k)), v=tuple(map(kv, cache.v)),
                         valid_BS=NamedSharding(mesh, logical_to_spec(("batch", "length"), cache.valid_BS.shape,
                                                                      mesh, rules)),
                         index=NamedSharding(mesh, PartitionSpec()))
