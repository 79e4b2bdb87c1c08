"""Settings of a TRACE RL run (`trace.train`): one frozen, validated dataclass; unknown keys are errors.

Methods (same loop, same policy, same cost counters):

* ``trace``: stage 1 allocates ``root_budget`` roots over a random pool of ``pool_prompts`` questions by the
  shared predictor (pair units, <= ``roots_per_prompt`` each), maximising ``root_objective``: "groups" (the
  spec's expected number of mixed groups, exact top-k) or "trajectories" ([ours]: expected number of roots
  in mixed groups, i.e. rollouts with a non-zero advantage; exact DP; `allocation` module docstring);
  stage 2 spends ``multiplier`` continuations per root on the turn prefixes with the highest flip
  probability (exact top-k).
* ``tree_random``: Tree-GRPO / TreePO-style baseline: ``root_budget // tree_group`` random questions with
  ``tree_group`` roots each; every root gets ``multiplier`` continuations from uniformly drawn prefixes.
* ``grpo_flat``: flat GRPO: ``flat_roots // flat_group`` random questions with ``flat_group`` roots each, no
  branching. Choose ``flat_roots`` so that generated tokens per step roughly match the tree methods; runs
  stop on ``token_budget`` (cumulative generated tokens), so comparisons are at equal generated tokens.

Predictor (our choices, spec §1.4 leaves them open): ``predictor_target="direct"`` trains on each node's own
samples (`targets.node_values`: the spec's subtree means, "leaves" / "children", are biased by TRACE's
outcome-dependent branching and squeeze hard prompts' values toward 0.5); ``predictor_prompt_share=0.5``
gives the few prompt rows (stage 1's inputs) half of each minibatch's loss weight, so the many prefix rows
do not swamp them (0 = raw count weights); ``predictor_ensemble`` = E > 1 members (`predictor` module
docstring): stage 1 then maximises the members' mean objective, so questions the members disagree on
(unfamiliar ones) lose value; stage 2 uses the members' mean. All methods train the predictor the same way
(only ``trace`` uses it).

``advantage``: ``tree_grpo`` (default for trees), ``segment``, ``grpo_flat`` (per-prompt GRPO over all
leaves; the only choice that makes sense for ``method="grpo_flat"``, forced there) or ``lpo`` (LPO_fwd on
each prompt's leaf group, padded leaves masked: `objectives.lpo.prepare_masked`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from lpo_jax.trace.allocation import ROOT_OBJECTIVES

METHODS = ("trace", "tree_random", "grpo_flat")
ADVANTAGES = ("tree_grpo", "segment", "grpo_flat", "lpo")
LOSS_AGGS = ("token-mean", "seq-mean-token-mean")
PREDICTOR_TARGETS = ("direct", "leaves", "children")


@dataclasses.dataclass(frozen=True)
class TraceTrainConfig:
    """See module docstring. Budget fields are per RL step; ``token_budget`` is per run (0 = use steps)."""

    method: str = "trace"
    advantage: str = "tree_grpo"
    steps: int = 30
    token_budget: int = 0
    seed: int = 0
    # rollout shapes
    pool_prompts: int = 16
    roots_per_prompt: int = 4
    root_budget: int = 16
    multiplier: int = 2
    root_objective: str = "groups"   # stage 1 (trace): "groups" (spec) | "trajectories" ([ours])
    tree_group: int = 2
    flat_group: int = 4
    flat_roots: int = 32
    temperature: float = 1.0
    # policy optimisation
    lr: float = 1e-3
    grad_clip: float = 1.0
    clip_eps: float = 0.2
    loss_agg: str = "token-mean"
    lpo_divergence: str = "fwd"
    mini_batches: int = 1
    pad_rows: int = 0          # > active_rows: train on this many prompt rows (shared shapes across methods)
    pad_leaves: int = 0        # > the layout's leaf slots: pad the leaf axis (shared shapes across methods)
    # predictor (trace only uses its values; all methods train it, so its metrics are comparable)
    predictor_hidden: int = 64
    predictor_lr: float = 3e-3
    predictor_updates: int = 8
    predictor_batch: int = 256
    predictor_buffer: int = 4096
    predictor_warm: int = 2
    predictor_features: str = "mean"   # "mean" (spec: pooled hidden) | "mean_last_len" (+ last token, length)
    predictor_prompt_share: float = 0.5   # share of each predictor minibatch's weight on prompt rows (0 = raw)
    predictor_target: str = "direct"   # `targets.node_values` mode of the predictor's targets (module docstring)
    predictor_ensemble: int = 1        # E members; stage 1 maximises their mean objective (1 = spec's single MLP)
    # evaluation
    eval_every: int = 0
    eval_samples: int = 2
    eval_temperature: float = 1.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.root_objective not in ROOT_OBJECTIVES:
            raise ValueError(f"root_objective must be one of {ROOT_OBJECTIVES}, got {self.root_objective!r}")
        if self.predictor_features not in ("mean", "mean_last_len"):
            raise ValueError(f"predictor_features must be 'mean' or 'mean_last_len', got {self.predictor_features!r}")
        if self.predictor_target not in PREDICTOR_TARGETS:
            raise ValueError(f"predictor_target must be one of {PREDICTOR_TARGETS}, got {self.predictor_target!r}")
        if not 0.0 <= self.predictor_prompt_share < 1.0:
            raise ValueError(f"predictor_prompt_share must be in [0, 1), got {self.predictor_prompt_share}")
        if self.loss_agg not in LOSS_AGGS:
            raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {self.loss_agg!r}")
        for name in ("steps", "pool_prompts", "roots_per_prompt", "root_budget", "tree_group", "flat_group",
                     "flat_roots", "mini_batches", "predictor_hidden", "predictor_batch", "predictor_buffer",
                     "predictor_ensemble", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"TraceTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.multiplier < 0 or self.token_budget < 0 or self.eval_every < 0 or self.predictor_warm < 0:
            raise ValueError("multiplier, token_budget, eval_every and predictor_warm must be >= 0")
        if self.lr <= 0 or self.predictor_lr <= 0 or not 0 < self.clip_eps < 1:
            raise ValueError("lr and predictor_lr must be > 0 and clip_eps in (0, 1)")
        if self.root_budget % 2 or self.root_budget > self.pool_prompts * (self.roots_per_prompt // 2 * 2):
            raise ValueError(f"root_budget={self.root_budget} must be even and <= pool_prompts * roots_per_prompt "
                             f"(even part) = {self.pool_prompts * (self.roots_per_prompt // 2 * 2)}")
        if self.root_budget % self.tree_group or self.tree_group > self.roots_per_prompt:
            raise ValueError(f"root_budget={self.root_budget} must be a multiple of tree_group={self.tree_group} "
                             f"<= roots_per_prompt={self.roots_per_prompt}")
        if self.flat_roots % self.flat_group or self.flat_roots // self.flat_group > self.pool_prompts:
            raise ValueError(f"flat_roots={self.flat_roots} must be a multiple of flat_group={self.flat_group} "
                             f"with flat_roots // flat_group <= pool_prompts={self.pool_prompts}")
        if self.pad_rows < 0 or self.pad_leaves < 0 or (self.pad_rows and self.pad_rows < self.active_rows):
            raise ValueError(f"pad_rows={self.pad_rows} must be 0 or >= active_rows={self.active_rows}; "
                             f"pad_leaves={self.pad_leaves} must be >= 0")
        if self.pad_leaves and self.pad_leaves < self.leaf_slots:
            raise ValueError(f"pad_leaves={self.pad_leaves} must be 0 or >= the layout's {self.leaf_slots} leaf slots")
        if self.flat_group < 2:
            raise ValueError("flat_group must be >= 2 (GRPO needs groups)")

    # -------------------------------------------------------------- derived static shapes
    @property
    def roots_slots(self) -> int:
        """M of the tree layout: max roots per prompt of this method."""
        return {"trace": self.roots_per_prompt, "tree_random": self.tree_group, "grpo_flat": self.flat_group}[
            self.method]

    @property
    def effective_multiplier(self) -> int:
        return 0 if self.method == "grpo_flat" else self.multiplier

    @property
    def active_rows(self) -> int:
        """Static number of prompt rows trained per step (max prompts with roots)."""
        if self.method == "trace":
            return min(self.pool_prompts, self.root_budget // 2)
        if self.method == "tree_random":
            return self.root_budget // self.tree_group
        return self.flat_roots // self.flat_group

    @property
    def leaf_slots(self) -> int:
        return self.roots_slots * (1 + self.effective_multiplier)

    @property
    def train_rows(self) -> int:
        return max(self.pad_rows, self.active_rows)

    @property
    def advantage_used(self) -> str:
        return "grpo_flat" if self.method == "grpo_flat" and self.advantage != "lpo" else self.advantage

    def replace(self, **changes) -> "TraceTrainConfig":
        return dataclasses.replace(self, **changes)


def trace_train_config(values: Mapping[str, Any] | None = None, **overrides) -> TraceTrainConfig:
    """Validated config from a mapping / ConfigDict plus overrides; unknown keys raise with the valid list."""
    data = dict(values.to_dict() if hasattr(values, "to_dict") else (values or {}))
    data.update(overrides)
    names = [f.name for f in dataclasses.fields(TraceTrainConfig)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown TRACE train setting(s) {unknown}; valid settings: {names}")
    return TraceTrainConfig(**data)
