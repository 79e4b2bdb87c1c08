"""Device mesh with axes ('data', 'fsdp', 'tensor') and Auto axis types (classic GSPMD propagation)."""
from __future__ import annotations

import math

import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(num_devices: int, data: int = 1, fsdp: int = -1, tensor: int = 1) -> tuple[int, int, int]:
    """Resolve the axis sizes; exactly one axis may be -1 (= fill with the remaining devices)."""
    sizes = [data, fsdp, tensor]
    if any(not isinstance(s, int) or (s < 1 and s != -1) for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive ints or -1, got data={data}, fsdp={fsdp}, "
                         f"tensor={tensor}")
    if sizes.count(-1) > 1:
        raise ValueError("at most one mesh axis may be -1 (fill the remaining devices)")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices cannot be split into axes of sizes {sizes}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh data*fsdp*tensor = {math.prod(sizes)} but {num_devices} devices are given; "
                         "use -1 for one axis to fill the rest")
    return tuple(sizes)


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
    """A ('data', 'fsdp', 'tensor') mesh over `devices` (default all), every axis of type Auto.

    Uses jax.make_mesh (topology-aware device order) when all devices are used, else the given order.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(len(devices), data, fsdp, tensor)
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        try:
            return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
        except (TypeError, ValueError):
            pass
    return jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)
