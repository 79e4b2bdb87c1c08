"""Objectives by name: `get_objective("lpo_fwd", **overrides)` -> Objective(name, config, prepare, loss)."""
from __future__ import annotations

from typing import Callable, NamedTuple

from lpo_jax.objectives.advantages import prepare
from lpo_jax.objectives.config import PRESETS, ObjectiveConfig, make_config
from lpo_jax.objectives.objective import loss

OBJECTIVE_NAMES = tuple(PRESETS)


class Objective(NamedTuple):
    """A named objective: its validated config and the two shared pure functions.

    prepare(rewards_BK, mask_BKT, cfg) -> Targets                       (once per rollout batch)
    loss(logp_BKT, old_logp_BKT, mask_BKT, targets, cfg, *, ref_logp_BKT=None, entropy_BKT=None)
        -> (scalar loss, metrics dict)                                   (per mini-batch of whole groups)
    """

    name: str
    config: ObjectiveConfig
    prepare: Callable
    loss: Callable


def get_objective(name: str, **overrides) -> Objective:
    """Objective `name` (one of OBJECTIVE_NAMES) with ObjectiveConfig `overrides`; unknown names raise."""
    return Objective(name=name, config=make_config(name, **overrides), prepare=prepare, loss=loss)
