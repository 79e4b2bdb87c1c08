"""Multi-turn episode records: the Env protocol, safe tool calls, per-token bookkeeping, padded batches.

Token roles in an episode: the prompt (turn 0) and observations are context (loss mask 0); the policy's
action segments are generated (loss mask 1). Turn t (1-based) = its action segment plus the observation
that answers it; `turn_ends[t]` is the token offset where turn t ends (turn_ends[0] = prompt length), i.e.
the turn boundaries TRACE branches from.

Restarting from a boundary needs the environment state there. If the env has `snapshot()` / `restore(s)`,
a snapshot is recorded at every boundary (after reset and after each step); otherwise the env is rebuilt by
replaying: `reset(prompt)` then `step(action)` for the recorded actions (deterministic envs only).
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Env(Protocol):
    """A tool environment, one instance per episode, driven on the host."""

    def reset(self, prompt: str) -> str:
        """Start an episode; returns the initial observation text (the full prompt the policy sees)."""

    def step(self, action: str) -> tuple[str, bool, float, dict]:
        """Apply one action segment; returns (observation, done, reward, info)."""


def has_snapshots(env) -> bool:
    return callable(getattr(env, "snapshot", None)) and callable(getattr(env, "restore", None))


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclasses.dataclass
class EpisodeRecord:
    """Everything about one episode (host objects). Lists are per token unless named per turn."""

    episode_id: int
    prompt: str
    tokens: list = dataclasses.field(default_factory=list)
    generated: list = dataclasses.field(default_factory=list)   # bool: policy token (in the loss)
    turn: list = dataclasses.field(default_factory=list)        # turn index of the token (0 = prompt)
    logprobs: list = dataclasses.field(default_factory=list)    # policy log-prob (temperature 1); 0 for context
    turn_ends: list = dataclasses.field(default_factory=list)   # token offset of each boundary; [0] = prompt end
    actions: list = dataclasses.field(default_factory=list)     # per turn: action text (cut at the stop string)
    observations: list = dataclasses.field(default_factory=list)  # per turn: observation text ("" if none)
    rewards: list = dataclasses.field(default_factory=list)     # per turn
    infos: list = dataclasses.field(default_factory=list)       # per turn
    snapshots: list = dataclasses.field(default_factory=list)   # per boundary: env snapshot (or None)
    done: bool = False
    finish: str = ""        # answer (env done) | eos | max_turns | context | error
    parent: tuple | None = None  # (source episode_id, branch turn) for continuations

    @property
    def num_turns(self) -> int:
        return len(self.actions)

    @property
    def reward(self) -> float:
        return float(sum(self.rewards))

    def add(self, tokens, generated: bool, turn: int, logprobs=None) -> None:
        tokens = [int(t) for t in tokens]
        self.tokens += tokens
        self.generated += [generated] * len(tokens)
        self.turn += [turn] * len(tokens)
        self.logprobs += [float(x) for x in logprobs] if logprobs is not None else [0.0] * len(tokens)

    def prefix(self, turn: int, episode_id: int) -> "EpisodeRecord":
        """A copy holding only the first `turn` turns (a branch point), with a new id."""
        if not 0 <= turn < len(self.turn_ends):
            raise ValueError(f"episode {self.episode_id} has boundaries 0..{len(self.turn_ends) - 1}, got {turn}")
        end = self.turn_ends[turn]
        return EpisodeRecord(
            episode_id=episode_id, prompt=self.prompt, tokens=self.tokens[:end], generated=self.generated[:end],
            turn=self.turn[:end], logprobs=self.logprobs[:end], turn_ends=self.turn_ends[:turn + 1],
            actions=self.actions[:turn], observations=self.observations[:turn], rewards=self.rewards[:turn],
            infos=self.infos[:turn], snapshots=self.snapshots[:turn + 1], parent=(self.episode_id, turn))


def snapshot_of(env):
    return copy.deepcopy(env.snapshot()) if has_snapshots(env) else None


def restore_env(make_env, record: EpisodeRecord, turn: int):
    """A fresh env in the state after `turn` turns of `record` (snapshot if available, else replay)."""
    env = make_env()
    snap = record.snapshots[turn] if turn < len(record.snapshots) else None
    if has_snapshots(env) and snap is not None:
        env.restore(copy.deepcopy(snap))
        return env
    env.reset(record.prompt)
    for action in record.actions[:turn]:
        env.step(action)
    return env


def call_envs(calls, timeout_s: float | None, max_workers: int, error_format: str):
    """Run env.step(action) for [(env, action)] concurrently; a raise or timeout becomes an error result.

    Returns [(observation, done, reward, info)]. A timed-out call keeps running in its worker thread (Python
    cannot kill threads); its env should not be reused after the episode.
    """
    if not calls:
        return []
    pool = cf.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(calls))))
    try:
        futures = [pool.submit(env.step, action) for env, action in calls]
        cf.wait(futures, timeout=timeout_s)          # one deadline for the whole batch of calls
        results = []
        for fut in futures:
            if not fut.done():
                msg = f"TimeoutError: tool call exceeded {timeout_s} s"
                results.append((error_format.format(error=msg), False, 0.0, {"error": msg, "timeout": True}))
                continue
            try:
                obs, done, reward, info = fut.result()
                results.append((str(obs), bool(done), float(reward), dict(info or {})))
            except Exception as exc:  # noqa: BLE001 - any tool failure becomes an observation
                msg = error_text(exc)
                results.append((error_format.format(error=msg), False, 0.0, {"error": msg}))
        return results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass
class EpisodeBatch:
    """Padded numpy view of a list of episodes, rows in record order (length L = `length`).

    tokens, loss_mask (generated), obs_mask (prompt/observation tokens), turn_ids, logprobs: [E, L];
    episode_ids, lengths, num_turns, rewards: [E]; turn_ends [E, max_turns + 1] (-1 beyond the last).
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    obs_mask: np.ndarray
    turn_ids: np.ndarray
    logprobs: np.ndarray
    episode_ids: np.ndarray
    lengths: np.ndarray
    num_turns: np.ndarray
    rewards: np.ndarray
    turn_ends: np.ndarray


def to_batch(records, length: int, max_turns: int, pad_id: int = 0) -> EpisodeBatch:
    e = len(records)
    out = EpisodeBatch(
        tokens=np.full((e, length), pad_id, np.int32), loss_mask=np.zeros((e, length), bool),
        obs_mask=np.zeros((e, length), bool), turn_ids=np.zeros((e, length), np.int32),
        logprobs=np.zeros((e, length), np.float32), episode_ids=np.array([r.episode_id for r in records], np.int32),
        lengths=np.array([len(r.tokens) for r in records], np.int32),
        num_turns=np.array([r.num_turns for r in records], np.int32),
        rewards=np.array([r.reward for r in records], np.float32),
        turn_ends=np.full((e, max_turns + 1), -1, np.int32))
    for i, r in enumerate(records):
        n = len(r.tokens)
        if n > length:
            raise ValueError(f"episode {r.episode_id} has {n} tokens > batch length {length}")
        out.tokens[i, :n] = r.tokens
        out.loss_mask[i, :n] = r.generated
        out.obs_mask[i, :n] = ~np.asarray(r.generated, bool)
        out.turn_ids[i, :n] = r.turn
        out.logprobs[i, :n] = r.logprobs
        out.turn_ends[i, :len(r.turn_ends)] = r.turn_ends
    return out
