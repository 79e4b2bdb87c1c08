"""Real-use search task: BM25 over a local jsonl corpus + HotpotQA-style QA loader (no network, no deps).

* Corpus: jsonl, one document per line with ``id``, ``title``, ``text``; FlashRAG / Search-R1 ``wiki-18``
  lines (``id``, ``contents`` = '"Title"\\ntext') are accepted too.
* `BM25Index`: Okapi BM25 (idf = log(1 + (N - df + 0.5) / (df + 0.5)); defaults k1 = 0.9, b = 0.4 as
  Pyserini), lowercase alphanumeric tokens, optional stopword list; postings in numpy arrays.
* `CorpusSearch`: the same tool interface as SynthHop's (``tool(query, rng) -> information content``),
  formatting the top-k passages as ``Doc i(Title: t) text`` lines (Search-R1 layout). Deterministic;
  `rng` is unused (kept for the interface).
* `load_qa_dataset`: json (list) or jsonl with ``question`` and ``answer`` (str or list) or FlashRAG's
  ``golden_answers``; extra ``aliases`` / ``answers`` become gold aliases in ``meta['aliases']``.
* `make_corpus_env`: `SearchEnv` with this tool and the QA reward (EM by default).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Iterable, Sequence

import numpy as np

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.datasets import read_records_file
from lpo_jax.tasks.synthhop_env import SearchEnv
from lpo_jax.tasks.synthhop_format import QARewardConfig, make_qa_reward_fn

_TOKEN_RE = re.compile(r"[a-z0-9]+")
SEARCH_R1_TEMPLATE = (
    "Answer the given question. You must reason inside <think> and </think> every time you get new "
    "information. If you lack knowledge, call a search engine with <search> query </search>; it returns "
    "the top results between <information> and </information>. You may search as many times as you want. "
    "When you can answer, give the answer inside <answer> and </answer> without explanation, e.g. "
    "<answer> Beijing </answer>. Question: {question}\n")
DEFAULT_STOPWORDS = frozenset(
    "a an and are as at be by for from has he in is it its of on or that the to was were will with what "
    "which who whom whose when where why how did does do".split())


@dataclasses.dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


def tokenize(text: str, stopwords: frozenset = frozenset()) -> list[str]:
    """Lowercase alphanumeric tokens minus stopwords."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in stopwords]


def _read_records(path: str) -> list[dict]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    return read_records_file(path)


def _document(rec: dict, n: int) -> Document:
    if "text" in rec:
        return Document(str(rec.get("id", n)), str(rec.get("title", "")), str(rec["text"]))
    if "contents" in rec:  # FlashRAG: '"Title"\ntext'
        title, _, text = str(rec["contents"]).partition("\n")
        return Document(str(rec.get("id", n)), title.strip().strip('"'), text.strip())
    raise ValueError(f"corpus record {n} has neither 'text' nor 'contents': keys {sorted(rec)}")


def load_corpus(path: str) -> list[Document]:
    """Documents of a jsonl (or json list) corpus file."""
    return [_document(rec, n) for n, rec in enumerate(_read_records(path))]


class BM25Index:
    """Okapi BM25 over `docs` (title and text are indexed together)."""

    def __init__(self, docs: Sequence[Document], *, k1: float = 0.9, b: float = 0.4,
                 stopwords: Iterable[str] = DEFAULT_STOPWORDS):
        if not docs:
            raise ValueError("BM25Index needs at least one document")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.docs, self.k1, self.b = list(docs), float(k1), float(b)
        self.stopwords = frozenset(stopwords)
        postings: dict[str, dict[int, int]] = {}
        lengths = np.zeros(len(self.docs), np.float64)
        for i, doc in enumerate(self.docs):
            toks = tokenize(f"{doc.title} {doc.text}", self.stopwords)
            lengths[i] = len(toks)
            for t in toks:
                row = postings.setdefault(t, {})
                row[i] = row.get(i, 0) + 1
        self.doc_len, self.avg_len = lengths, max(lengths.mean(), 1e-9)
        n = len(self.docs)
        self._postings = {t: (np.fromiter(row.keys(), np.int64, len(row)),
                              np.fromiter(row.values(), np.float64, len(row)))
                          for t, row in postings.items()}
        self._idf = {t: math.log(1.0 + (n - len(ids) + 0.5) / (len(ids) + 0.5))
                     for t, (ids, _) in self._postings.items()}

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document, float64 [n_docs] (repeated query terms count once each)."""
        out = np.zeros(len(self.docs), np.float64)
        norm = self.k1 * (1.0 - self.b + self.b * self.doc_len / self.avg_len)
        for term in tokenize(query, self.stopwords):
            if term not in self._postings:
                continue
            ids, tf = self._postings[term]
            out[ids] += self._idf[term] * tf * (self.k1 + 1.0) / (tf + norm[ids])
        return out

    def search(self, query: str, k: int = 3) -> list[tuple[int, float]]:
        """Top-k (doc index, score), best first; ties by index; documents with score 0 are dropped."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        s = self.scores(query)
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        return [(int(i), float(s[i])) for i in order if s[i] > 0]


class CorpusSearch:
    """Search tool over a `BM25Index` (same interface as `SynthHopSearch`)."""

    def __init__(self, index: BM25Index, top_k: int = 3, max_chars: int | None = None):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.index, self.top_k, self.max_chars = index, top_k, max_chars

    def __call__(self, query: str, rng: np.random.Generator | None = None) -> str:
        hits = self.index.search(query, self.top_k)
        if not hits:
            return "no result"
        lines = []
        for rank, (i, _) in enumerate(hits, 1):
            doc = self.index.docs[i]
            text = doc.text if self.max_chars is None else doc.text[: self.max_chars]
            lines.append(f"Doc {rank}(Title: {doc.title}) {text}")
        return "\n".join(lines)


def _answers(rec: dict, n: int) -> list[str]:
    raw = rec.get("answer", rec.get("golden_answers", rec.get("answers")))
    golds = [raw] if isinstance(raw, str) else list(raw or [])
    extra = rec.get("aliases", [])
    golds += [extra] if isinstance(extra, str) else list(extra)
    golds = list(dict.fromkeys(str(g) for g in golds if str(g).strip()))
    if not golds:
        raise ValueError(f"QA record {n} has no answer: need 'answer', 'golden_answers' or 'answers'")
    return golds


def load_qa_dataset(path: str, *, template: str = SEARCH_R1_TEMPLATE, limit: int | None = None,
                    uid_offset: int = 0) -> list[Example]:
    """HotpotQA-style records -> Examples (prompt = template.format(question=...), '?' appended if missing)."""
    if "{question}" not in template:
        raise ValueError("template must contain '{question}'")
    out = []
    for n, rec in enumerate(_read_records(path)[:limit]):
        if "question" not in rec:
            raise ValueError(f"QA record {n} of {path} has no 'question' field: keys {sorted(rec)}")
        question = str(rec["question"]).strip()
        if not question.endswith("?"):
            question += "?"
        golds = _answers(rec, n)
        meta = {"aliases": tuple(golds[1:]), "question": question,
                "id": str(rec.get("id", rec.get("_id", n)))}
        meta.update({k: rec[k] for k in ("type", "level") if k in rec})
        out.append(Example(prompt=template.format(question=question), answer=golds[0], meta=meta,
                           uid=uid_offset + n))
    return out


def make_corpus_env(index: BM25Index, *, top_k: int = 3, max_turns: int = 4, seed: int = 0,
                    reward_cfg: QARewardConfig = QARewardConfig(), examples: Sequence[Example] = ()):
    """`SearchEnv` over a BM25 index; ``reset(prompt_str)`` looks the prompt up in `examples`."""
    by_prompt = {ex.prompt: ex for ex in examples}

    def resolve(prompt: str) -> Example:
        if prompt not in by_prompt:
            raise ValueError("prompt string not among the env's examples; pass the Example to reset()")
        return by_prompt[prompt]

    return SearchEnv(CorpusSearch(index, top_k), make_qa_reward_fn(reward_cfg), max_turns=max_turns,
                     seed=seed, resolve_example=resolve)
