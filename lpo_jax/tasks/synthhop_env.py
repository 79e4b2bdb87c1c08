"""`SearchEnv`: a resumable multi-turn search environment (agent-loop protocol), for any search tool.

Used by SynthHop (`synthhop.make_synthhop_env`) and by the local-corpus task (`retrieval.make_corpus_env`).

Protocol (what the agent loop calls)::

    obs = env.reset(prompt)                       # prompt: Example, or str resolved by `resolve_example`
    obs, done, reward, info = env.step(action)    # one generated turn (until </search>, </answer> or EOS)
    state = env.snapshot(); env.restore(state)    # branch from any turn boundary (TRACE continuations)

A search tool is any callable ``tool(query: str, rng: np.random.Generator) -> str`` returning the content of
the ``<information>`` block. Decisions [ours]:

* Everything the environment appends is wrapped in ``<information> ... </information>`` (search results,
  tool errors, invalid-action notices), so observation masking by tag covers every appended token.
* An action with ``<answer>`` ends the episode (reward = ``reward_fn(transcript, example)``); with
  ``<search>`` it runs the tool; with both, the first closing tag decides; with neither it gets
  `invalid_action_obs`. A raising tool gives `tool_error_obs` and ``info['tool_error']``.
* At turn ``max_turns`` the episode ends whatever the action (a search there is not executed, like the
  peers' forced final answer); the reward is then scored on the transcript (no answer -> 0 unless shaped).
* State = transcript (turns of (action, observation)) + counters + the noise RNG state: `restore` of a
  `snapshot` reproduces everything, including future retrieval noise; pass ``seed=`` to draw fresh noise
  (continuations from one prefix should explore), or build the env with ``fresh_noise_on_restore=True``
  so that a plain ``restore(state)`` (what the agent loop calls) reseeds from (env seed, state's turn
  count): give each env instance its own seed (e.g. a counter in ``make_env``) and continuations differ. `EnvState.prefix(t)` is the state after the first t
  turns of a longer episode (it keeps the later RNG state; reseed when restoring it).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import numpy as np

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.synthhop_format import extract_answer, extract_search

SearchTool = Callable[[str, np.random.Generator], str]


@dataclasses.dataclass(frozen=True)
class EnvState:
    """Everything needed to resume an episode at a turn boundary (picklable)."""

    example: Example
    turns: tuple[tuple[str, str], ...] = ()
    n_searches: int = 0
    error_turns: tuple[int, ...] = ()  # 1-based turns whose tool call raised
    done: bool = False
    reward: float | None = None
    rng_state: dict | None = None

    @property
    def n_turns(self) -> int:
        return len(self.turns)

    @property
    def n_tool_errors(self) -> int:
        return len(self.error_turns)

    def transcript(self, sep: str = " ") -> str:
        """Response text so far: actions and observations interleaved (prompt excluded)."""
        return sep.join(part for turn in self.turns for part in turn if part)

    def prefix(self, t: int) -> "EnvState":
        """State after the first t turns (0 <= t <= n_turns); not done, counters recounted."""
        if not 0 <= t <= self.n_turns:
            raise ValueError(f"prefix turn count must be in [0, {self.n_turns}], got {t}")
        turns = self.turns[:t]
        n_search = sum(1 for action, obs in turns if _is_search(action) and obs)
        errors = tuple(i for i in self.error_turns if i <= t)
        return dataclasses.replace(self, turns=turns, n_searches=n_search, error_turns=errors, done=False,
                                   reward=None)


def _is_search(action: str) -> bool:
    return _first_block(action) == "search"


def _first_block(action: str) -> str | None:
    """'search' / 'answer' by whichever closing tag comes first, None if neither is complete."""
    ends = {k: action.find(f"</{k}>") for k in ("search", "answer")}
    ends = {k: v for k, v in ends.items() if v >= 0}
    if not ends:
        return None
    kind = min(ends, key=ends.get)
    if kind == "answer" and extract_answer(action) is None:
        return None
    if kind == "search" and extract_search(action) is None:
        return None
    return kind


class SearchEnv:
    """Search-R1 style environment; see module docstring."""

    def __init__(
        self,
        tool: SearchTool,
        reward_fn: Callable[[str, Example], float],
        *,
        max_turns: int = 5,
        resolve_example: Callable[[str], Example] | None = None,
        seed: int = 0,
        invalid_action_obs: str = "<information> invalid action </information>",
        tool_error_obs: str = "<information> search failed </information>",
        fresh_noise_on_restore: bool = False,
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if not callable(tool):
            raise TypeError(f"tool must be callable as tool(query, rng) -> str, got {type(tool).__name__}")
        self.tool, self.reward_fn, self.max_turns = tool, reward_fn, int(max_turns)
        self.resolve_example = resolve_example
        self.invalid_action_obs, self.tool_error_obs = invalid_action_obs, tool_error_obs
        self._seed, self.fresh_noise_on_restore = int(seed), bool(fresh_noise_on_restore)
        self._rng = np.random.default_rng(seed)
        self._state: EnvState | None = None

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, prompt: Example | str) -> str:
        """Starts an episode; returns the prompt text (the first observation)."""
        if isinstance(prompt, Example):
            example = prompt
        elif isinstance(prompt, str):
            if self.resolve_example is None:
                raise ValueError("reset got a prompt string but this SearchEnv has no resolve_example; "
                                 "pass the Example itself or construct the env with resolve_example=...")
            example = self.resolve_example(prompt)
        else:
            raise TypeError(f"reset expects an Example or a prompt str, got {type(prompt).__name__}")
        self._state = EnvState(example=example)
        return example.prompt

    def step(self, action: str) -> tuple[str, bool, float, dict]:
        """Applies one generated turn -> (observation, done, reward, info). Reward is 0.0 until done."""
        state = self._require_state()
        if state.done:
            raise RuntimeError("step() after the episode finished; call reset() or restore() first")
        if not isinstance(action, str):
            raise TypeError(f"action must be the generated turn text (str), got {type(action).__name__}")
        turn = state.n_turns + 1
        kind = _first_block(action)
        last_turn = turn >= self.max_turns
        info = {"turn": turn, "query": None, "tool_error": None, "invalid_action": kind is None,
                "truncated": False, "answer": None}
        obs, n_search, errors = "", state.n_searches, state.error_turns
        if kind == "answer":
            info["answer"] = extract_answer(action)
        elif not last_turn and kind == "search":
            info["query"] = query = extract_search(action)
            n_search += 1
            try:
                content = self.tool(query, self._rng)
                obs = f"<information> {str(content).strip()} </information>"
            except Exception as exc:  # noqa: BLE001 - a failing tool is an observation, not a crash
                obs, errors = self.tool_error_obs, errors + (turn,)
                info["tool_error"] = f"{type(exc).__name__}: {exc}"
        elif not last_turn:
            obs = self.invalid_action_obs
        done = kind == "answer" or last_turn
        info["truncated"] = done and kind != "answer"
        state = dataclasses.replace(state, turns=state.turns + ((action, obs),), n_searches=n_search,
                                    error_turns=errors, done=done)
        reward = 0.0
        if done:
            reward = float(self.reward_fn(state.transcript(), state.example))
            state = dataclasses.replace(state, reward=reward)
        info["n_searches"] = state.n_searches
        self._state = state
        return obs, done, reward, info

    def snapshot(self) -> EnvState:
        """Current state, including the noise RNG state (restore reproduces future draws)."""
        state = self._require_state()
        return dataclasses.replace(state, rng_state=copy.deepcopy(self._rng.bit_generator.state))

    def restore(self, state: EnvState, *, seed=None) -> None:
        """Resumes `state`; ``seed`` replaces the saved noise RNG (fresh draws for a continuation)."""
        if not isinstance(state, EnvState):
            raise TypeError(f"restore expects an EnvState from snapshot(), got {type(state).__name__}")
        if seed is None and self.fresh_noise_on_restore:
            seed = (self._seed, state.n_turns)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        elif state.rng_state is not None:
            self._rng = np.random.default_rng()
            self._rng.bit_generator.state = copy.deepcopy(state.rng_state)
        self._state = dataclasses.replace(state, rng_state=None)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def state(self) -> EnvState:
        return self._require_state()

    def _require_state(self) -> EnvState:
        if self._state is None:
            raise RuntimeError("no episode: call reset(prompt) first")
        return self._state
