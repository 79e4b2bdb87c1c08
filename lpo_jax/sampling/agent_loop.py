"""Multi-turn ReAct episodes: generate a segment until a tool-call stop string / answer / EOS, step the env on
the host, append the observation tokens to the KV cache, continue; a batch of episodes advances together.

Static shapes: one KV cache of `AgentConfig.max_len` slots for the whole batch (batch bucket rows); every
turn is one `Sampler.decode` (per-turn budget `sampling.max_new_tokens`) and one `Sampler.append` of the
observations (right-padded to a length bucket <= `obs_bucket`), so a run compiles a few programs, then none.
All rows share the cache write index: a turn consumes as many slots as its longest segment plus the
observation bucket; when the space left cannot hold another segment and observation, remaining episodes
end with finish "context".

Per turn and episode: the segment is decoded to text and cut at the earliest stop string on the host (if
the device missed a tokenization of it, the extra tokens are dropped from the record and their cache slots
invalidated), passed to `env.step` (in a thread pool, with a timeout; a raise or timeout becomes an error
observation), and the observation is tokenized (truncated to `max_obs_tokens`) and appended unless the
episode is done. An episode ends when the env says done, the policy emits EOS, `max_turns` is reached, or
the context is full. Rewards are summed over turns.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from lpo_jax.sampling.config import FINISH_EOS, SamplingConfig
from lpo_jax.sampling.episodes import (EpisodeBatch, EpisodeRecord, call_envs, error_text, restore_env,
                                       snapshot_of, to_batch)
from lpo_jax.sampling.sampler import Sampler, as_key
from lpo_jax.sampling.stop import decode_tokens, encode_text, stop_token_patterns, truncate_at_stop


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Episode limits. `sampling.max_new_tokens` is the per-turn action budget; its stop_sequences are
    filled from `stop_strings` by `run_episodes` if empty."""

    sampling: SamplingConfig
    max_turns: int = 4
    max_len: int = 1024
    stop_strings: tuple = ("</search>", "</answer>")
    max_obs_tokens: int = 128
    tool_timeout_s: float | None = 30.0
    max_workers: int = 8
    error_format: str = "\n<error>{error}</error>\n"

    def __post_init__(self):
        if not isinstance(self.sampling, SamplingConfig):
            raise TypeError("AgentConfig.sampling must be a SamplingConfig")
        if self.max_turns < 1 or self.max_len < 2 or self.max_obs_tokens < 1:
            raise ValueError("AgentConfig needs max_turns >= 1, max_len >= 2, max_obs_tokens >= 1")
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))


class _Run:
    """One batch of episodes in flight (host bookkeeping around a device DecodeState)."""

    def __init__(self, sampler: Sampler, tokenizer, make_env, cfg: AgentConfig):
        self.sampler, self.tok, self.make_env, self.cfg = sampler, tokenizer, make_env, cfg
        scfg = cfg.sampling
        if cfg.stop_strings and not scfg.stop_sequences:
            scfg = scfg.replace(stop_sequences=stop_token_patterns(tokenizer, cfg.stop_strings))
        self.scfg = scfg
        self.obs_bucket = sampler.buckets.length_bucket(cfg.max_obs_tokens)

    def advance(self, records: list[EpisodeRecord], envs: list, turn0: list[int], key) -> list[EpisodeRecord]:
        """Run every not-done record from its current boundary until it ends."""
        cfg, scfg = self.cfg, self.scfg
        prefixes = [r.tokens for r in records]
        st, rows = self._start(prefixes)
        n = len(records)
        turn = list(turn0)
        key = as_key(key)
        step = 0
        while True:
            live = [i for i in range(n) if not records[i].done]
            if not live:
                break
            room = st.cache.max_len - int(st.cache.index) - self.obs_bucket
            if room < 1:
                for i in live:
                    records[i].done, records[i].finish = True, "context"
                break
            active = np.zeros(rows, bool)
            active[live] = True
            limit = np.full(rows, min(scfg.max_new_tokens, room), np.int32)
            seg_start = int(st.cache.index)
            st, out = self.sampler.decode(st, jax.random.fold_in(key, step), scfg, active=active, limit=limit)
            step += 1
            drop = np.zeros(rows, np.int32)
            calls, call_rows = [], []
            for i in live:
                r, length = records[i], int(out.lengths[i])
                keep, text, found = truncate_at_stop(self.tok, out.tokens[i, :length], cfg.stop_strings)
                drop[i] = length - keep
                turn[i] += 1
                r.add(out.tokens[i, :keep], True, turn[i], out.logprobs[i, :keep])
                eos = found is None and int(out.finish_reason[i]) == FINISH_EOS
                if eos:   # the env sees the text without the EOS token (the record keeps the token)
                    text = decode_tokens(self.tok, out.tokens[i, :keep - 1])
                r.actions.append(text)
                calls.append((envs[i], text))
                call_rows.append((i, eos))
            if drop.any():
                st = self.sampler.rewind(st, seg_start, out.lengths, drop)
            results = call_envs(calls, cfg.tool_timeout_s, cfg.max_workers, cfg.error_format)
            chunks = [[] for _ in range(rows)]
            for (i, eos), (obs, done, reward, info) in zip(call_rows, results):
                r = records[i]
                r.rewards.append(reward)
                r.infos.append(info)
                if done or eos or turn[i] >= cfg.max_turns:
                    r.observations.append(obs)
                    r.done, r.finish = True, ("answer" if done else "eos" if eos else "max_turns")
                    r.turn_ends.append(len(r.tokens))
                    r.snapshots.append(None)
                    continue
                obs_ids = encode_text(self.tok, obs)[: cfg.max_obs_tokens]
                r.observations.append(obs)
                r.add(obs_ids, False, turn[i])
                r.turn_ends.append(len(r.tokens))
                r.snapshots.append(_safe_snapshot(envs[i], info))
                chunks[i] = obs_ids
            st = self.sampler.append(st, chunks, pad_id=scfg.pad_id)
        return records

    def _start(self, prefixes):
        """Prefill each distinct prefix once, then duplicate rows for repeated prefixes."""
        uniq = list(dict.fromkeys(tuple(p) for p in prefixes))
        if len(uniq) == len(prefixes):
            st, rows, _ = self.sampler.start(prefixes, self.cfg.max_len, pad_id=self.scfg.pad_id)
            return st, rows
        st, _, _ = self.sampler.start([list(u) for u in uniq], self.cfg.max_len, pad_id=self.scfg.pad_id)
        where = {u: j for j, u in enumerate(uniq)}
        rows = self.sampler.buckets.batch_bucket(len(prefixes), self.sampler.data_parallel_size)
        idx = [where[tuple(p)] for p in prefixes] + [0] * (rows - len(prefixes))
        return self.sampler.take(st, idx), rows


def _safe_snapshot(env, info):
    try:
        return snapshot_of(env)
    except Exception as exc:  # noqa: BLE001 - a broken snapshot must not crash the batch
        info.setdefault("snapshot_error", error_text(exc))
        return None


def run_episodes(sampler: Sampler, tokenizer, make_env: Callable[[], object], prompts: Sequence[str], key,
                 cfg: AgentConfig, *, encode_prompt: Callable[[str], list] | None = None
                 ) -> tuple[EpisodeBatch, list[EpisodeRecord]]:
    """Run one episode per prompt (a fresh env each: make_env(); env.reset(prompt) gives the initial text).

    Returns the padded EpisodeBatch ([E, cfg.max_len]) and the records (texts, snapshots, ...).
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    encode = encode_prompt or (lambda text: encode_text(tokenizer, text))
    run = _Run(sampler, tokenizer, make_env, cfg)
    records, envs = [], []
    for i, prompt in enumerate(prompts):
        env, r = make_env(), EpisodeRecord(episode_id=i, prompt=prompt)
        try:
            first = env.reset(prompt)
            ids = encode(str(first))
            if not ids:
                raise ValueError("the initial observation encodes to no tokens")
            r.add(ids, False, 0)
            r.snapshots.append(_safe_snapshot(env, {}))
        except Exception as exc:  # noqa: BLE001 - a failing reset ends only this episode
            r.add(encode(prompt) or [cfg.sampling.pad_id], False, 0)
            r.done, r.finish = True, "error"
            r.infos.append({"error": error_text(exc)})
        r.turn_ends.append(len(r.tokens))
        records.append(r)
        envs.append(env)
    run.advance(records, envs, [0] * len(records), key)
    return to_batch(records, cfg.max_len, cfg.max_turns, cfg.sampling.pad_id), records


def branch_episodes(sampler: Sampler, tokenizer, make_env: Callable[[], object], records: Sequence[EpisodeRecord],
                    points: Sequence[tuple[int, int]], key, cfg: AgentConfig, *, first_id: int = 0
                    ) -> tuple[EpisodeBatch, list[EpisodeRecord]]:
    """Continue episodes from turn boundaries: points = [(index into records, turn t)], t < num_turns.

    Each continuation copies turns 1..t of its source (observations included), restores the env at that
    boundary (snapshot or replay), and generates turns t+1.. up to max_turns. Identical prefixes are
    prefilled once and shared. New ids are first_id, first_id + 1, ...; `parent` = (source id, t).
    """
    if not points:
        raise ValueError("points must list at least one (episode index, turn) pair")
    run = _Run(sampler, tokenizer, make_env, cfg)
    new, envs, turns = [], [], []
    for j, (i, t) in enumerate(points):
        src = records[i]
        if not 0 <= t < min(src.num_turns, cfg.max_turns):
            raise ValueError(f"episode {src.episode_id} has {src.num_turns} turns: a branch turn t must satisfy "
                             f"0 <= t < min(num_turns, max_turns), got {t}")
        r = src.prefix(t, first_id + j)
        try:
            env = restore_env(make_env, src, t)
        except Exception as exc:  # noqa: BLE001
            env = None
            r.done, r.finish = True, "error"
            r.infos.append({"error": f"restore failed: {error_text(exc)}"})
        new.append(r)
        envs.append(env)
        turns.append(t)
    run.advance(new, envs, turns, key)
    return to_batch(new, cfg.max_len, cfg.max_turns, cfg.sampling.pad_id), new
