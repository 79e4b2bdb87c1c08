"""SynthHop: CPU-sized synthetic multi-hop QA with a local knowledge base and search tool (spec §5).

* KB: ``n_entities`` pseudo-words and a few relations; every (entity, relation) has exactly one object
  (random functional graph, seeded).
* Questions with k hops: "what is the r3 of the r2 of the r1 of ENT ?" (r1 applies first); the question
  alone determines the gold answer, so `parse_question` rebuilds an `Example` from prompt text.
* Search tool: ``<search> ENT rel </search>`` -> ``<information> ENT rel OBJ </information>``. With
  probability ``eps_ret`` the first fact is a distractor: the same relation of a lexically close entity
  (same first syllable) or another relation of the same entity. ``top_k > 1`` appends k-1 distinct
  distractor facts, separated by " ; ". ``lenient_parse`` accepts extra words / any order in the query.
* All text is space-separated words from `synthhop_vocab(kb)` (word-level tokenizer friendly).
* Reward: binary normalized EM on the last ``<answer>`` (`synthhop_reward_fn`; shaping / F1 via
  `synthhop_format.make_qa_reward_fn`). Noisy SFT demonstrations: `synthhop_demos.make_demonstrations`.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.synthhop_env import SearchEnv
from lpo_jax.tasks.synthhop_format import make_qa_reward_fn

DEFAULT_RELATIONS = ("born_in", "mentor_of", "capital_of", "founder_of", "rival_of", "author_of",
                     "leader_of", "parent_of")
TAG_TOKENS = ("<think>", "</think>", "<search>", "</search>", "<information>", "</information>",
              "<answer>", "</answer>")
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
PROMPT_PREFIX = ("answer the question . search with <search> entity relation </search> . "
                 "answer with <answer> entity </answer> . question :")
FILLER_TOKENS = tuple(dict.fromkeys(
    PROMPT_PREFIX.split() + "what is the of ? i need so answer result wrong search again no invalid "
    "action failed ; : . , entity relation question with".split()))
synthhop_reward_fn = make_qa_reward_fn()


@dataclasses.dataclass(frozen=True)
class SynthHopConfig:
    """KB size, question hops, retrieval noise and turn limit (``max_turns`` default: max_hops + 1)."""

    n_entities: int = 500
    relations: tuple[str, ...] = DEFAULT_RELATIONS
    seed: int = 0
    min_hops: int = 1
    max_hops: int = 4
    eps_ret: float = 0.1
    distractor_entity_prob: float = 0.5
    top_k: int = 1
    lenient_parse: bool = True
    max_turns: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "relations", tuple(self.relations))
        if not 2 <= self.n_entities <= 5000:
            raise ValueError(f"n_entities must be in [2, 5000], got {self.n_entities}")
        if len(set(self.relations)) != len(self.relations) or len(self.relations) < 2:
            raise ValueError(f"need >= 2 distinct relations, got {self.relations}")
        if not 1 <= self.min_hops <= self.max_hops:
            raise ValueError(f"need 1 <= min_hops <= max_hops, got {self.min_hops}, {self.max_hops}")
        if not 0.0 <= self.eps_ret <= 1.0 or not 0.0 <= self.distractor_entity_prob <= 1.0:
            raise ValueError("eps_ret and distractor_entity_prob must be probabilities in [0, 1]")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.max_turns is not None and self.max_turns < 2:
            raise ValueError(f"max_turns must be >= 2 (one search + one answer), got {self.max_turns}")

    @property
    def turns(self) -> int:
        return self.max_turns if self.max_turns is not None else self.max_hops + 1


@dataclasses.dataclass(frozen=True, eq=False)
class KnowledgeBase:
    """Functional KB: ``table[e, r]`` is the object entity of (entity e, relation r)."""

    entities: tuple[str, ...]
    relations: tuple[str, ...]
    table: np.ndarray  # int32 [E, R]

    def __post_init__(self):
        self.table.setflags(write=False)
        object.__setattr__(self, "entity_index", {e: i for i, e in enumerate(self.entities)})
        object.__setattr__(self, "relation_index", {r: i for i, r in enumerate(self.relations)})
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(self.entities):
            groups.setdefault(e[:2], []).append(i)
        object.__setattr__(self, "_close", {i: [j for j in groups[e[:2]] if j != i]
                                            for i, e in enumerate(self.entities)})

    def obj(self, entity: int, relation: int) -> int:
        return int(self.table[entity, relation])

    def fact(self, entity: int, relation: int) -> str:
        return f"{self.entities[entity]} {self.relations[relation]} {self.entities[self.obj(entity, relation)]}"

    def follow(self, start: int, relations) -> list[int]:
        """Entity chain [start, after r1, after r2, ...]."""
        chain = [int(start)]
        for r in relations:
            chain.append(self.obj(chain[-1], int(r)))
        return chain

    def close_entities(self, entity: int) -> list[int]:
        """Lexically close entities (same first syllable), excluding `entity`."""
        return self._close[entity]


def _pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    words: dict[str, None] = {}
    while len(words) < n:
        k = rng.integers(2, 4)
        word = "".join(syllables[i] for i in rng.integers(0, len(syllables), size=k))
        if word not in FILLER_TOKENS:
            words[word] = None
    return list(words)


def make_kb(cfg: SynthHopConfig = SynthHopConfig()) -> KnowledgeBase:
    """Seeded random KB (same config -> same KB)."""
    rng = np.random.default_rng(cfg.seed)
    entities = _pseudo_words(cfg.n_entities, rng)
    E, R = cfg.n_entities, len(cfg.relations)
    offset = rng.integers(1, E, size=(E, R))  # object != subject
    table = ((np.arange(E)[:, None] + offset) % E).astype(np.int32)
    return KnowledgeBase(tuple(entities), cfg.relations, table)


def question_text(kb: KnowledgeBase, start: int, relations) -> str:
    """"what is the rk of the ... of the r1 of ENT ?" (r1 applies first)."""
    parts = [f"the {kb.relations[r]} of" for r in reversed(list(relations))]
    return f"what is {' '.join(parts)} {kb.entities[start]} ?"


def make_example(kb: KnowledgeBase, start: int, relations, uid: int = -1) -> Example:
    relations = tuple(int(r) for r in relations)
    chain = kb.follow(start, relations)
    prompt = f"{PROMPT_PREFIX} {question_text(kb, start, relations)}"
    meta = {"hops": len(relations), "start": kb.entities[start],
            "relations": tuple(kb.relations[r] for r in relations),
            "chain": tuple(kb.entities[e] for e in chain)}
    return Example(prompt=prompt, answer=kb.entities[chain[-1]], meta=meta, uid=uid)


def parse_question(kb: KnowledgeBase, prompt: str, uid: int = -1) -> Example:
    """Rebuilds the Example of a SynthHop prompt (or bare question) string."""
    words = prompt.split()
    try:
        q = len(words) - 1 - words[::-1].index("what")
        body = words[q + 2:-1] if words[-1] == "?" else words[q + 2:]
        *rel_words, start = [w for w in body if w not in ("the", "of")]
        relations = [kb.relation_index[r] for r in reversed(rel_words)]
        entity = kb.entity_index[start]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"not a SynthHop question for this KB: {prompt[-120:]!r} ({exc})") from None
    if not relations:
        raise ValueError(f"SynthHop question without relations: {prompt[-120:]!r}")
    return make_example(kb, entity, relations, uid)


def make_dataset(kb: KnowledgeBase, n: int, *, hops=(1, 2, 3, 4), seed: int = 0,
                 exclude: set | None = None, uid_offset: int = 0) -> list[Example]:
    """``n`` distinct questions, hop counts cycling through `hops` (balanced); skips keys in `exclude`.

    A question key is (start entity, relation tuple); chains that revisit an entity are rejected so that
    hop-order mistakes rarely land on the gold answer by accident.
    """
    hops = tuple(int(h) for h in hops)
    if not hops or min(hops) < 1:
        raise ValueError(f"hops must be positive integers, got {hops}")
    rng, seen, out = np.random.default_rng(seed), set(exclude or ()), []
    E, R = len(kb.entities), len(kb.relations)
    for i in itertools.count():
        if len(out) == n:
            return out
        if i > 100 * n + 1000:
            raise ValueError(f"could not find {n} distinct questions with hops {hops}; use a larger KB")
        k = hops[len(out) % len(hops)]
        start, rels = int(rng.integers(E)), tuple(int(r) for r in rng.integers(R, size=k))
        if (start, rels) in seen or len(set(kb.follow(start, rels))) < k + 1:
            continue
        seen.add((start, rels))
        out.append(make_example(kb, start, rels, uid=uid_offset + len(out)))


def question_key(example: Example) -> tuple:
    """(start, relations) key of a SynthHop example (for disjoint train / held-out splits)."""
    return example.meta["start"], example.meta["relations"]


class SynthHopSearch:
    """The local search tool: ``tool(query, rng) -> information content`` (module docstring)."""

    def __init__(self, kb: KnowledgeBase, cfg: SynthHopConfig = SynthHopConfig()):
        self.kb, self.cfg = kb, cfg

    def parse(self, query: str) -> tuple[int, int] | None:
        words = query.split()
        if not self.cfg.lenient_parse:
            if len(words) != 2:
                return None
            e, r = self.kb.entity_index.get(words[0]), self.kb.relation_index.get(words[1])
            return None if e is None or r is None else (e, r)
        words = [w.strip(".,;:?!\"'").lower() for w in words]
        ents = [self.kb.entity_index[w] for w in words if w in self.kb.entity_index]
        rels = [self.kb.relation_index[w] for w in words if w in self.kb.relation_index]
        return (ents[0], rels[0]) if ents and rels else None

    def _distractor(self, e: int, r: int, rng: np.random.Generator, used: set) -> tuple[int, int]:
        close = [c for c in self.kb.close_entities(e) if (c, r) not in used]
        if close and rng.random() < self.cfg.distractor_entity_prob:
            return int(rng.choice(close)), r
        others = [(e, q) for q in range(len(self.kb.relations)) if (e, q) not in used]
        if others:
            return others[int(rng.integers(len(others)))]
        return int(rng.integers(len(self.kb.entities))), int(rng.integers(len(self.kb.relations)))

    def __call__(self, query: str, rng: np.random.Generator) -> str:
        parsed = self.parse(query)
        if parsed is None:
            return "no result"
        used = {parsed}
        first = parsed if rng.random() >= self.cfg.eps_ret else self._distractor(*parsed, rng, used)
        facts = [first]
        used.add(first)
        while len(facts) < self.cfg.top_k:
            facts.append(self._distractor(*parsed, rng, used))
            used.add(facts[-1])
        return " ; ".join(self.kb.fact(e, r) for e, r in facts)


def make_synthhop_env(kb: KnowledgeBase, cfg: SynthHopConfig = SynthHopConfig(), *, seed: int = 0,
                      reward_fn=synthhop_reward_fn, fresh_noise_on_restore: bool = False) -> SearchEnv:
    """`SearchEnv` over the SynthHop KB; ``reset`` accepts an Example or a SynthHop prompt string."""
    return SearchEnv(SynthHopSearch(kb, cfg), reward_fn, max_turns=cfg.turns, seed=seed,
                     resolve_example=lambda prompt: parse_question(kb, prompt),
                     fresh_noise_on_restore=fresh_noise_on_restore)


def synthhop_vocab(kb: KnowledgeBase, specials=("<pad>", "<eos>", "<unk>")) -> list[str]:
    """Every word SynthHop text can contain: specials, tags, filler, relations, entities (no duplicates).

    Text is tokenized by whitespace (``text.split()``); build a word-level tokenizer over this list.
    """
    return list(dict.fromkeys((*specials, *TAG_TOKENS, *FILLER_TOKENS, *kb.relations, *kb.entities)))
