"""Noisy SynthHop demonstration episodes for SFT warm-up (spec §5: ~60% correct hop order, relation slips).

A scripted policy plays each question in a real `SearchEnv` (so observations, retrieval noise and rewards
are exactly what RL will see):

* hop order: correct (r1, r2, ...) with probability ``p_correct_order``, else a random non-identity
  permutation (1-hop questions are always in order);
* each hop's relation is replaced by a random other relation with probability ``p_relation_error``;
* when the returned fact does not match the query (retrieval noise) and ``retry_on_mismatch``, the same
  search is repeated once, turns permitting;
* the last turn always answers the entity reached (so success falls with the hop count).

Each `Demo` keeps its text as segments ``(text, is_observation)`` so SFT can mask observation tokens.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.synthhop import KnowledgeBase, SynthHopConfig, make_synthhop_env


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    p_correct_order: float = 0.6
    p_relation_error: float = 0.1
    retry_on_mismatch: bool = True
    think: bool = True

    def __post_init__(self):
        for name in ("p_correct_order", "p_relation_error"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DemoConfig.{name} must be a probability, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Demo:
    """One scripted episode: prompt, response segments (text, is_observation), reward."""

    example: Example
    segments: tuple[tuple[str, bool], ...]
    reward: float
    n_turns: int

    @property
    def prompt(self) -> str:
        return self.example.prompt

    @property
    def completion(self) -> str:
        return " ".join(text for text, _ in self.segments if text)

    @property
    def correct(self) -> bool:
        return self.reward > 0


def _plan(kb: KnowledgeBase, example: Example, rng: np.random.Generator, cfg: DemoConfig) -> list[int]:
    rels = [kb.relation_index[r] for r in example.meta["relations"]]
    if len(rels) > 1 and rng.random() >= cfg.p_correct_order:
        while True:
            perm = rng.permutation(len(rels))
            if (perm != np.arange(len(rels))).any():
                rels = [rels[i] for i in perm]
                break
    n_rel = len(kb.relations)
    for i, r in enumerate(rels):
        if rng.random() < cfg.p_relation_error:
            rels[i] = int((r + rng.integers(1, n_rel)) % n_rel)
    return rels


def _say(cfg: DemoConfig, thought: str, block: str) -> str:
    return f"<think> {thought} </think> {block}" if cfg.think else block


def make_demonstration(kb: KnowledgeBase, example: Example, rng: np.random.Generator,
                       cfg: DemoConfig = DemoConfig(),
                       env_cfg: SynthHopConfig = SynthHopConfig()) -> Demo:
    """Plays one scripted episode (module docstring); `rng` drives both the policy and the retrieval noise."""
    env = make_synthhop_env(kb, env_cfg, seed=int(rng.integers(2**31)))
    env.reset(example)
    entity = kb.entity_index[example.meta["start"]]
    plan, retried, done, reward = _plan(kb, example, rng, cfg), False, False, 0.0
    segments: list[tuple[str, bool]] = []
    hop = 0
    while not done:
        name = kb.entities[entity]
        if hop == len(plan) or env.state.n_turns + 1 >= env.max_turns:
            action = _say(cfg, f"so the answer is {name}", f"<answer> {name} </answer>")
        else:
            rel = kb.relations[plan[hop]]
            thought = "result wrong search again" if retried else f"i need the {rel} of {name}"
            action = _say(cfg, thought, f"<search> {name} {rel} </search>")
        obs, done, reward, _ = env.step(action)
        segments.append((action, False))
        if obs:
            segments.append((obs, True))
        if done or hop == len(plan):
            continue
        fact = obs.split()[1:4]  # "<information> e r o ..." -> [e, r, o]
        matches = len(fact) == 3 and fact[0] == name and fact[1] == kb.relations[plan[hop]]
        if not matches and cfg.retry_on_mismatch and not retried:
            retried = True
            continue
        retried = False
        if len(fact) == 3 and fact[2] in kb.entity_index:
            entity = kb.entity_index[fact[2]]
        hop += 1
    return Demo(example, tuple(segments), float(reward), env.state.n_turns)


def make_demonstrations(kb: KnowledgeBase, examples, *, seed: int = 0, cfg: DemoConfig = DemoConfig(),
                        env_cfg: SynthHopConfig = SynthHopConfig()) -> list[Demo]:
    """One demo per example (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return [make_demonstration(kb, ex, rng, cfg, env_cfg) for ex in examples]
