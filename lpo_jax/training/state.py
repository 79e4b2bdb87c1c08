"""TrainState and the optimizer: the array half of a run, created once and threaded through pure steps."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    """Policy params, optimizer state, update counter and RNG (a raw uint32 key, so it checkpoints as is)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def make_optimizer(*, lr: float, b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.0,
                   warmup_steps: int = 0, schedule: str = "constant", total_steps: int = 1,
                   grad_clip: float = 1.0) -> optax.GradientTransformation:
    """AdamW with optional linear warm-up, constant or cosine decay, and global-norm gradient clipping.

    Defaults follow the LPO spec §9.3 (verl's: clip 1.0, no warm-up). ``grad_clip = 0`` disables clipping.
    """
    if schedule == "cosine":
        sched = optax.warmup_cosine_decay_schedule(0.0 if warmup_steps else lr, lr, max(warmup_steps, 0),
                                                   max(total_steps, warmup_steps + 1))
    elif warmup_steps:
        sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
                                     [warmup_steps])
    else:
        sched = optax.constant_schedule(lr)
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    parts.append(optax.adamw(sched, b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*parts)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Any]:
    """(graphdef, params). The policy's state must be all nnx.Param (what the trainer updates)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise TypeError("the policy model holds non-Param state; the trainer expects only nnx.Param variables")
    return graphdef, params


def init_train_state(params: Any, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """A fresh TrainState; optimizer state is created with the params' shardings (jit follows its inputs)."""
    opt_state = jax.jit(optimizer.init)(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, rng=rng)
