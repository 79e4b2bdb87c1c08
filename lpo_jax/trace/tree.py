"""Static-shape TRACE tree rollouts on top of the multi-turn agent loop (spec §0 items 1-2, §2.1 driver).

    out = rollout_tree(sampler, tokenizer, make_env, prompts, m_P, key, agent_cfg, tree_cfg,
                       prefix_value_fn=...)

1. Roots: prompt i gets m_i episodes (`sampling.run_episodes`), placed in slots j < m_i of [P, M].
2. Stage 2: candidates (j, t), 1 <= t < n_turns_j; ``expansion="trace"`` scores them with
   ``prefix_value_fn(root_records [P][M], max_turns) -> Vp [P, M, T]`` (host callable, e.g. policy hidden
   states -> `predictor.predict`; default 0.5 = uninformed) and allocates m_i N continuations per prompt by
   exact top-k (`allocation.allocate_prefixes`); ``"random"`` draws N uniform candidates per root
   (Tree-GRPO / TreePO baseline); ``"none"`` gives flat groups.
3. Continuations (`sampling.branch_episodes`): copy turns 1..t of the source root (observations
   included), restore the env at that boundary (snapshot or replay), generate turns t+1.. ; every leaf is a
   full episode.
4. Everything lands in fixed arrays [P, L, S] (L = M + M N leaf slots, S = agent_cfg.max_len) plus
   `TreeLeaves` for targets / advantages, and cost counters: trajectories, generated tokens (continuations
   do not pay for copied turns), tool calls (non-empty observations of generated turns), generated turns.

Success for stage 2 is ``reward >= success_threshold`` (binary q); leaf rewards stay as returned by the env.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import numpy as np

from lpo_jax.sampling.agent_loop import AgentConfig, branch_episodes, run_episodes
from lpo_jax.sampling.episodes import EpisodeRecord
from lpo_jax.trace import allocation
from lpo_jax.trace.layout import TreeLeaves, make_tree_leaves

EXPANSIONS = ("trace", "random", "none")


@dataclasses.dataclass(frozen=True)
class TreeConfig:
    """Static tree sizes: P prompts (max), M roots per prompt, N continuations per root (C = M N)."""

    num_prompts: int
    roots_per_prompt: int
    multiplier: int = 2
    expansion: str = "trace"
    success_threshold: float = 0.5

    def __post_init__(self):
        if self.num_prompts < 1 or self.roots_per_prompt < 1 or self.multiplier < 0:
            raise ValueError("TreeConfig needs num_prompts >= 1, roots_per_prompt >= 1, multiplier >= 0")
        if self.expansion not in EXPANSIONS:
            raise ValueError(f"TreeConfig.expansion must be one of {EXPANSIONS}, got {self.expansion!r}")

    @property
    def num_continuations(self) -> int:
        return self.roots_per_prompt * self.multiplier

    @property
    def num_leaves(self) -> int:
        return self.roots_per_prompt + self.num_continuations


@dataclasses.dataclass
class TreeRollout:
    """Host result of one tree rollout. Arrays are numpy; token arrays [P, L, S], K [P, M, T]."""

    leaves: TreeLeaves
    tokens: np.ndarray
    loss_mask: np.ndarray
    obs_mask: np.ndarray
    turn_ids: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    K: np.ndarray
    records: list                 # [P][L] EpisodeRecord or None
    cost: dict


@functools.partial(jax.jit, static_argnames=("N", "expansion"))
def _stage2(key, vp, success, root_valid, n_turns, m, *, N, expansion):
    T = vp.shape[-1]
    cand = allocation.prefix_candidates(root_valid, n_turns, T)
    if expansion == "trace":
        gains = allocation.prefix_gains(vp, success, cand, Kmax=vp.shape[1] * N)
        K = allocation.allocate_prefixes(gains, m, N, key=key)
    else:
        K = allocation.allocate_prefixes_random(key, cand, root_valid, N)
    return K, allocation.continuation_slots(K, vp.shape[1] * N)


def _check(prompts, m_P, cfg: TreeConfig):
    P, M = cfg.num_prompts, cfg.roots_per_prompt
    if isinstance(prompts, str) or not 1 <= len(prompts) <= P:
        raise ValueError(f"prompts must be a list of 1..{P} (TreeConfig.num_prompts) strings, got {len(prompts)}")
    m = np.zeros(P, np.int64)
    given = np.asarray(m_P, np.int64).reshape(-1)
    if given.shape[0] not in (len(prompts), P) or np.any(given < 0) or np.any(given > M):
        raise ValueError(f"m_P must hold len(prompts) or {P} counts in [0, {M}], got {given.tolist()}")
    m[: given.shape[0]] = given
    m[len(prompts):] = 0
    if m.sum() == 0:
        raise ValueError("m_P allocates no roots; give at least one prompt m_i > 0")
    return m


def rollout_tree(sampler, tokenizer, make_env: Callable[[], object], prompts: Sequence[str], m_P, key,
                 agent_cfg: AgentConfig, cfg: TreeConfig, *,
                 prefix_value_fn: Callable[[list, int], np.ndarray] | None = None) -> TreeRollout:
    """One tree rollout (module docstring). `m_P` comes from stage 1 (`allocation.allocate_roots`)."""
    m = _check(prompts, m_P, cfg)
    P, M, N, T, S = (cfg.num_prompts, cfg.roots_per_prompt, cfg.multiplier, agent_cfg.max_turns,
                     agent_cfg.max_len)
    C, L = cfg.num_continuations, cfg.num_leaves
    key = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
    k_root, k_alloc, k_cont = jax.random.split(key, 3)
    slots = [(p, j) for p in range(len(prompts)) for j in range(m[p])]
    root_batch, root_recs = run_episodes(sampler, tokenizer, make_env, [prompts[p] for p, _ in slots], k_root,
                                         agent_cfg)
    grid: list[list[EpisodeRecord | None]] = [[None] * L for _ in range(P)]
    arrays = {"tokens": np.zeros((P, L, S), np.int32), "loss_mask": np.zeros((P, L, S), bool),
              "obs_mask": np.zeros((P, L, S), bool), "turn_ids": np.zeros((P, L, S), np.int32),
              "logprobs": np.zeros((P, L, S), np.float32), "lengths": np.zeros((P, L), np.int32)}
    _fill(arrays, grid, root_batch, root_recs, slots)
    root_valid = np.arange(M)[None, :] < m[:, None]
    root_reward = np.zeros((P, M), np.float32)
    root_n = np.ones((P, M), np.int32)
    for p, j in slots:
        root_reward[p, j] = grid[p][j].reward
        root_n[p, j] = max(1, min(grid[p][j].num_turns, T))
    src, branch = np.zeros((P, C), np.int32), np.zeros((P, C), np.int32)
    cont_valid = np.zeros((P, C), bool)
    K = np.zeros((P, M, T), np.int32)
    if cfg.expansion != "none" and N > 0:
        vp = np.full((P, M, T), 0.5, np.float32)
        if cfg.expansion == "trace" and prefix_value_fn is not None:
            vp = np.asarray(prefix_value_fn([row[:M] for row in grid], T), np.float32)
            if vp.shape != (P, M, T):
                raise ValueError(f"prefix_value_fn must return Vp of shape {(P, M, T)}, got {vp.shape}")
        success = (root_reward >= cfg.success_threshold).astype(np.float32)
        K, (src, branch, cont_valid) = jax.device_get(_stage2(k_alloc, vp, success, root_valid, root_n, m,
                                                              N=N, expansion=cfg.expansion))
        cont_slots = [(p, M + c) for p in range(P) for c in range(C) if cont_valid[p, c]]
        if cont_slots:
            index = {pj: i for i, pj in enumerate(slots)}
            points = [(index[(p, int(src[p, l - M]))], int(branch[p, l - M])) for p, l in cont_slots]
            cont_batch, cont_recs = branch_episodes(sampler, tokenizer, make_env, root_recs, points, k_cont,
                                                    agent_cfg, first_id=len(root_recs))
            _fill(arrays, grid, cont_batch, cont_recs, cont_slots)
    cont_reward = np.zeros((P, C), np.float32)
    cont_n = np.ones((P, C), np.int32)
    for p in range(P):
        for c in range(C):
            if cont_valid[p, c]:
                cont_reward[p, c] = grid[p][M + c].reward
                cont_n[p, c] = max(int(branch[p, c]) + 1, min(grid[p][M + c].num_turns, T))
    leaves = make_tree_leaves(root_reward, root_valid, root_n, cont_reward, cont_valid, src, branch, cont_n,
                              max_turns=T)
    return TreeRollout(leaves=jax.device_get(leaves), K=np.asarray(K), records=grid,
                       cost=_cost(grid, arrays, np.asarray(leaves.branch_t_PL), np.asarray(leaves.n_turns_PL)),
                       **arrays)


def _fill(arrays, grid, batch, records, slots):
    for row, (p, l) in enumerate(slots):
        for name in ("tokens", "loss_mask", "obs_mask", "turn_ids", "logprobs"):
            arrays[name][p, l] = getattr(batch, name)[row]
        arrays["lengths"][p, l] = batch.lengths[row]
        grid[p][l] = records[row]


def _cost(grid, arrays, branch_PL, n_turns_PL) -> dict:
    """Equal-cost counters over valid leaves; continuations pay only for turns after their branch point."""
    traj = tokens = tools = turns = 0
    for p, row in enumerate(grid):
        for l, rec in enumerate(row):
            if rec is None:
                continue
            b = int(branch_PL[p, l])
            traj += 1
            turns += int(n_turns_PL[p, l]) - b
            own = arrays["turn_ids"][p, l] > b
            tokens += int((arrays["loss_mask"][p, l] & own).sum())
            tools += sum(1 for obs in rec.observations[b:] if obs)
    return {"trajectories": traj, "generated_tokens": tokens, "tool_calls": tools, "generated_turns": turns}
