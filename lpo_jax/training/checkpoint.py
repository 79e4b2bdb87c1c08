"""Checkpoints: one orbax composite per save (arrays + JSON metadata), async, keep-N, atomic.

A checkpoint holds the whole run as two items:
  * ``state``: every array pytree of the run (train state: params, optimizer state, step, RNG; selector state;
    anything else array-valued), saved with ``StandardSave`` so it restores onto any mesh;
  * ``meta``: JSON (config, data position, counters, metrics history), saved with ``JsonSave``.

Orbax writes each step into a temporary directory and renames it only when complete, so a run killed mid-save
leaves the previous step intact and ``latest_step`` never names a partial one.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint could not be found or restored; the message says what to do."""


def open_manager(directory: str, *, keep: int = 2, async_save: bool = True) -> ocp.CheckpointManager:
    """A CheckpointManager over ``directory`` (made absolute), keeping the newest ``keep`` steps."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
    """Starts an (async) save of ``state`` (array pytree) and ``meta`` (JSON-able dict) at ``step``."""
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)


def _abstract(target: Any) -> Any:
    """Shape/dtype/sharding skeleton of ``target``, so arrays restore straight onto their devices."""
    def leaf(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return jax.tree.map(leaf, target)


def read_meta(manager: ocp.CheckpointManager, step: int | None = None) -> tuple[int, dict]:
    """(step, meta) of a saved step (default: the latest) without touching its arrays."""
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
        raise CheckpointError(f"checkpoint step {step} not found in {manager.directory}; "
                              f"available: {sorted(manager.all_steps())}")
    out = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return step, dict(out.meta)


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None) -> tuple[int, Any, dict]:
    """Restores (step, state, meta) into the structure, dtypes and shardings of ``target``.

    ``step`` defaults to the latest complete step. Raises CheckpointError when there is none, or when the
    saved arrays do not fit ``target`` (a different model or config than the one that wrote it).
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(
            f"no complete checkpoint in {manager.directory}; start a fresh run (checkpoint.resume=False) "
            "or point output_dir/run_name at a run directory that holds one")
    if step not in manager.all_steps():
        raise CheckpointError(
            f"checkpoint step {step} not found in {manager.directory}; available: {sorted(manager.all_steps())}")
    try:
        out = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
        raise CheckpointError(
            f"checkpoint step {step} in {manager.directory} does not match this run's state "
            f"(different model/selector/config?) or is damaged: {err}") from err
    return step, out.state, dict(out.meta)
