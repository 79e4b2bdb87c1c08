"""Checkpoint round trip, clear errors, and atomicity under a process killed mid-save."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.training import checkpoint


def _state(scale=1.0):
    return {"params": {"w": jnp.arange(12.0).reshape(3, 4) * scale}, "step": jnp.int32(7),
            "rng": jax.random.PRNGKey(3), "selector": {"alpha": jnp.ones(5) * scale}}


def test_round_trip_restores_arrays_and_meta(tmp_path):
    with checkpoint.open_manager(str(tmp_path / "ck")) as mngr:
        checkpoint.save(mngr, 5, _state(2.0), {"data_position": 11, "config": {"a": 1}})
        mngr.wait_until_finished()
        step, state, meta = checkpoint.restore(mngr, _state())
    assert step == 5
    jax.tree.map(np.testing.assert_array_equal, state, _state(2.0))
    assert meta == {"data_position": 11, "config": {"a": 1}}


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with checkpoint.open_manager(str(tmp_path / "empty")) as mngr:
        with pytest.raises(checkpoint.CheckpointError, match="no complete checkpoint"):
            checkpoint.restore(mngr, _state())
        checkpoint.save(mngr, 1, _state(), {})
        mngr.wait_until_finished()
        with pytest.raises(checkpoint.CheckpointError, match="step 9 not found"):
            checkpoint.restore(mngr, _state(), step=9)


def test_mismatched_target_is_a_clear_error(tmp_path):
    with checkpoint.open_manager(str(tmp_path / "ck")) as mngr:
        checkpoint.save(mngr, 1, _state(), {})
        mngr.wait_until_finished()
        other = {"params": {"w": jnp.zeros((3, 4)), "extra": jnp.zeros(2)}}
        with pytest.raises(checkpoint.CheckpointError, match="does not match"):
            checkpoint.restore(mngr, other)


def test_kill_during_save_keeps_previous_step(tmp_path):
    """A process that dies while step 2 is being written leaves step 1 as the latest, intact."""
    directory = str(tmp_path / "ck")
    script = textwrap.dedent(f"""
        import os, jax.numpy as jnp
        from lpo_jax.training import checkpoint
        mngr = checkpoint.open_manager({directory!r})
        small = {{"w": jnp.full((4,), 1.0)}}
        checkpoint.save(mngr, 1, small, {{"ok": 1}}); mngr.wait_until_finished()
        big = {{"w": jnp.full((4,), 2.0), "blob": jnp.ones((16, 1024, 1024), jnp.float32)}}
        checkpoint.save(mngr, 2, big, {{"ok": 2}})
        os._exit(9)   # die while the async write of step 2 is in flight
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    leftovers = [n for n in os.listdir(directory) if n not in ("1",)]
    assert leftovers, "step 2 finished before the kill; the test did not exercise an interrupted save"
    with checkpoint.open_manager(directory) as mngr:
        assert mngr.latest_step() == 1
        step, state, meta = checkpoint.restore(mngr, {"w": jnp.zeros(4)})
    assert step == 1 and meta == {"ok": 1}
    np.testing.assert_array_equal(state["w"], np.ones(4))
