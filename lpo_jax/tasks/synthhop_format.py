"""Search-R1 turn format and QA rewards (shared by SynthHop and the local-corpus retrieval task).

Turn grammar (one turn = one generated action, then the environment's observation)::

    <think> ... </think> <search> query </search>        -> env appends <information> ... </information>
    <think> ... </think> <answer> final answer </answer> -> episode ends

Reward (spec §4): normalized exact match (lowercase; drop punctuation; drop the words a/an/the; collapse
spaces) of the LAST ``<answer>`` block against any gold alias. Options (`QARewardConfig`):

* ``match="f1"``: correct iff token F1 >= ``f1_threshold`` (TRACE's QA accuracy, "EM with F1 >= 0.3").
* ``format_shaping=True``: Tree-GRPO / Search-R1 ``qa_em_format`` values (`FormatScores`): correct + valid
  format 1.0; correct + bad format 0.8; wrong + valid 0.2 (+ ``retrieval_score`` if a gold alias appears in
  some ``<information>`` block); wrong + bad format 0.1; no answer: 0.2 if the format is valid else 0.

The completion is the response only (prompt excluded), so the last ``<answer>`` block is the model's own
(Search-R1's extractor needs >= 2 matches because its text holds the prompt's example answer).

Format validity [ours, the peers' state machine is not copied]: outside the tags only whitespace; blocks
never nest and always close; block order ``think? (search information think?)* answer?``; nothing after
``answer``; ``search`` and ``answer`` blocks are non-empty. A truncated episode that never answered can
therefore still be "valid" (the peers' no-answer branch).
"""
from __future__ import annotations

import dataclasses
import re
import string
from collections import Counter
from typing import Sequence

TAGS = ("think", "search", "information", "answer")
_TAG_RE = re.compile(r"<(/?)(think|search|information|answer)>")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_SEARCH_RE = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_INFO_RE = re.compile(r"<information>(.*?)</information>", re.DOTALL)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
MATCH_MODES = ("em", "f1")


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lowercase, drop punctuation, drop a/an/the, collapse whitespace."""
    text = str(text).lower().translate(_PUNCT_TABLE)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> bool:
    """True iff the normalized prediction equals some normalized gold alias."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(g) for g in golds)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best token-level F1 (normalized tokens, multiset overlap) over the gold aliases; 0 if none."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize_answer(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def extract_answer(completion: str) -> str | None:
    """Text of the last ``<answer> ... </answer>`` block (stripped), or None."""
    matches = _ANSWER_RE.findall(completion)
    return matches[-1].strip() if matches else None


def extract_search(action: str) -> str | None:
    """Query of the first ``<search> ... </search>`` block of one action (stripped), or None."""
    match = _SEARCH_RE.search(action)
    return match.group(1).strip() if match else None


def information_blocks(completion: str) -> list[str]:
    """Contents of every ``<information>`` block, in order."""
    return [m.strip() for m in _INFO_RE.findall(completion)]


def is_valid_format(completion: str) -> bool:
    """Search-R1 grammar check (module docstring)."""
    pos, state, opened = 0, "start", None  # states: start, think, search, information, answer
    follows = {  # block -> blocks allowed to open next
        "start": {"think", "search", "answer"},
        "think": {"search", "answer"},
        "search": {"information"},
        "information": {"think", "search", "answer"},
        "answer": set(),
    }
    content_start = 0
    for match in _TAG_RE.finditer(completion):
        closing, tag = match.group(1) == "/", match.group(2)
        between = completion[pos:match.start()]
        if opened is None and between.strip():
            return False  # stray text outside any block
        if not closing:
            if opened is not None or tag not in follows[state]:
                return False
            opened, content_start = tag, match.end()
        else:
            if opened != tag:
                return False
            if tag in ("search", "answer") and not completion[content_start:match.start()].strip():
                return False
            opened, state = None, tag
        pos = match.end()
    if opened is not None or completion[pos:].strip():
        return False
    return state != "search"  # a search must be followed by its information block


@dataclasses.dataclass(frozen=True)
class FormatScores:
    """Tree-GRPO ``qa_em_format`` values (spec §3.1)."""

    correct_valid: float = 1.0
    correct_invalid: float = 0.8
    wrong_valid: float = 0.2
    wrong_invalid: float = 0.1
    no_answer_valid: float = 0.2
    no_answer_invalid: float = 0.0
    retrieval_score: float = 0.0


@dataclasses.dataclass(frozen=True)
class QARewardConfig:
    """How a QA completion is scored (module docstring). Binary EM by default."""

    match: str = "em"
    f1_threshold: float = 0.3
    format_shaping: bool = False
    scores: FormatScores = FormatScores()

    def __post_init__(self):
        if self.match not in MATCH_MODES:
            raise ValueError(f"QARewardConfig.match must be one of {MATCH_MODES}, got {self.match!r}")
        if not 0.0 < self.f1_threshold <= 1.0:
            raise ValueError(f"f1_threshold must be in (0, 1], got {self.f1_threshold}")


def gold_aliases(answer: str, meta) -> tuple[str, ...]:
    """Gold answer plus ``meta['aliases']`` (str or sequence of str), deduplicated in order."""
    aliases = meta.get("aliases", ()) if meta else ()
    if isinstance(aliases, str):
        aliases = (aliases,)
    out = []
    for a in (answer, *aliases):
        if isinstance(a, str) and a.strip() and a not in out:
            out.append(a)
    return tuple(out)


def is_correct(prediction: str, golds: Sequence[str], cfg: QARewardConfig = QARewardConfig()) -> bool:
    """EM (default) or F1 >= threshold against any alias."""
    if cfg.match == "f1":
        return token_f1(prediction, golds) >= cfg.f1_threshold
    return exact_match(prediction, golds)


def qa_score(completion: str, golds: Sequence[str], cfg: QARewardConfig = QARewardConfig()) -> float:
    """Reward of one response text against gold aliases (module docstring)."""
    if not golds:
        raise ValueError("qa_score needs at least one non-empty gold answer (Example.answer or meta['aliases'])")
    answer = extract_answer(completion)
    correct = answer is not None and is_correct(answer, golds, cfg)
    if not cfg.format_shaping:
        return float(correct)
    s, valid = cfg.scores, is_valid_format(completion)
    if answer is None:
        return s.no_answer_valid if valid else s.no_answer_invalid
    if correct:
        return s.correct_valid if valid else s.correct_invalid
    if not valid:
        return s.wrong_invalid
    infos = [f" {normalize_answer(info)} " for info in information_blocks(completion)]
    retrieved = any(f" {normalize_answer(g)} " in info for info in infos for g in golds)
    return s.wrong_valid + (s.retrieval_score if retrieved else 0.0)


def make_qa_reward_fn(cfg: QARewardConfig = QARewardConfig()):
    """``reward_fn(completion, example) -> float`` (tasks contract) with gold = answer + meta['aliases']."""

    def reward_fn(completion: str, example) -> float:
        return qa_score(completion, gold_aliases(example.answer, example.meta), cfg)

    return reward_fn
