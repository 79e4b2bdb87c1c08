"""Multi-host data plumbing: per-host rows of a global batch, global arrays from host-local data, gathers.

The trainer is the same program on every host (``jax.distributed.initialize()`` first). Every host computes the
same prompt selection (replicated, deterministic given the key); host ``p`` then owns the contiguous block
``p`` of the selected prompts, generates and scores only those, and contributes them to global arrays with
``jax.make_array_from_process_local_data``. Small per-group results (rewards, successes, counts) are
all-gathered so every host keeps identical selector state and metrics. With one process every function here
reduces to the plain single-host operation.

Row order of a global array follows the mesh's device order, which need not match the process order; nothing
downstream depends on it (targets are per group, the train step averages over rows), and host-side
bookkeeping always pairs ids with the rewards gathered in process order.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """True on the process that writes logs, curves and exports (process 0)."""
    return jax.process_index() == 0


def block(n: int) -> slice:
    """This process's contiguous block of ``n`` global items (``n`` must divide evenly over the processes)."""
    p = count()
    if n % p:
        raise ValueError(f"{n} items do not split evenly over {p} processes; make the batch (prompts per step, "
                         "eval prompts) a multiple of jax.process_count()")
    size = n // p
    return slice(jax.process_index() * size, (jax.process_index() + 1) * size)


def allgather(x) -> np.ndarray:
    """Concatenates every process's ``x`` along axis 0 (process order); identity with one process."""
    x = np.asarray(x)
    if count() == 1:
        return x
    return np.asarray(multihost_utils.process_allgather(x, tiled=x.ndim > 0))


def global_max(value: int) -> int:
    """The maximum of an integer over processes (e.g. a length bucket every host must agree on)."""
    return int(allgather(np.asarray([value])).max())


def to_global(x_local, sharding: jax.sharding.Sharding) -> jax.Array:
    """A global array whose leading axis is every process's ``x_local`` stacked (sharded by ``sharding``)."""
    x_local = np.asarray(x_local)
    if count() == 1:
        return jax.device_put(x_local, sharding)
    shape = (x_local.shape[0] * count(),) + x_local.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x_local, shape)


def replicate(tree, mesh: jax.sharding.Mesh):
    """Places host values (identical on every process) replicated over the whole mesh."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if count() == 1:
            return jax.device_put(x, sharding)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)))
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree)


def local_rows(x: jax.Array) -> np.ndarray:
    """The rows of a batch-sharded global array that live on this process, in global order, as numpy."""
    if count() == 1 or x.is_fully_addressable:
        return np.asarray(x)
    shards = {}
    for shard in x.addressable_shards:
        start = (shard.index[0].start or 0) if x.ndim else 0
        shards.setdefault(start, np.asarray(shard.data))
    return np.concatenate([shards[s] for s in sorted(shards)], axis=0)


def gather_tree(tree):
    """Every array of ``tree`` in full on every process (e.g. params for an HF export); identity if addressable."""
    def full(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        return multihost_utils.process_allgather(x, tiled=True)
    return jax.tree.map(full, tree)
