"""Metric sinks for the training loop: JSONL, TensorBoard, optional W&B, and a PNG of the curves.

All host-side; the loop hands each sink a flat dict of Python floats per step.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable


def to_floats(metrics: dict) -> dict:
    """Flat dict of Python floats (device scalars fetched once)."""
    import jax
    host = jax.device_get(metrics)
    return {k: float(v) for k, v in host.items()}


class MetricsWriter:
    """Writes one JSON object per line to ``<run_dir>/metrics.jsonl`` (+ TensorBoard / W&B when enabled)."""

    def __init__(self, run_dir: str, *, tensorboard: bool = True, wandb: bool = False, config: dict | None = None,
                 append: bool = False, enabled: bool = True):
        """enabled=False (multi-host processes other than 0): every call is a no-op."""
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._file = open(self.path, "a" if append else "w") if enabled else None
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))
        self._wandb = None
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError as err:
                raise ImportError("config.log.wandb=True needs `pip install wandb`") from err
            self._wandb = wandb_lib.init(project="lpo_jax", config=config, dir=run_dir)

    def write(self, step: int, metrics: dict) -> None:
        if self._file is None:
            return
        row = {"step": int(step), **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                     for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(rows: list[dict], path: str, keys: Iterable[str], *, title: str = "") -> str:
    """Saves a PNG with one panel per key (x = step); rows lacking a key are skipped. Returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
