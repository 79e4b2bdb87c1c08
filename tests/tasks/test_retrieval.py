"""Local-corpus search task: corpus / QA loaders, BM25 ranking, search tool, env over the corpus."""
import json
import math

import numpy as np
import pytest

from lpo_jax.tasks import retrieval as rt
from lpo_jax.tasks.synthhop_format import information_blocks

DOCS = [
    {"id": "d0", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "d1", "title": "Eiffel Tower", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris."},
    {"id": "d2", "title": "Berlin", "text": "Berlin is the capital of Germany and its largest city."},
    {"id": "d3", "title": "Gustave Eiffel", "text": "Gustave Eiffel was a French civil engineer born in Dijon."},
    {"id": "d4", "title": "Dijon", "text": "Dijon is a city in eastern France, known for mustard."},
]


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    lines = [json.dumps(d) for d in DOCS[:4]]
    lines.append(json.dumps({"id": "d4", "contents": '"Dijon"\n' + DOCS[4]["text"]}))  # FlashRAG layout
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def index(corpus_path):
    return rt.BM25Index(rt.load_corpus(corpus_path))


def test_load_corpus_both_layouts(corpus_path):
    docs = rt.load_corpus(corpus_path)
    assert [d.id for d in docs] == ["d0", "d1", "d2", "d3", "d4"]
    assert docs[4].title == "Dijon" and docs[4].text.startswith("Dijon is a city")


@pytest.mark.parametrize("query,best", [("capital of Germany", "d2"), ("who engineered the Eiffel tower", "d1"),
                                        ("Gustave Eiffel birthplace born", "d3"), ("mustard city", "d4"),
                                        ("largest city of France", "d0")])
def test_bm25_ranks_the_right_doc_first(index, query, best):
    hits = index.search(query, k=3)
    assert index.docs[hits[0][0]].id == best
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_bm25_score_formula(index):
    # "mustard" appears once, only in d4: score = idf * tf (k1 + 1) / (tf + k1 (1 - b + b len / avg))
    n, k1, b = len(index.docs), index.k1, index.b
    idf = math.log(1 + (n - 1 + 0.5) / (1 + 0.5))
    dl = index.doc_len[4]
    expect = idf * (k1 + 1) / (1 + k1 * (1 - b + b * dl / index.avg_len))
    scores = index.scores("mustard")
    assert scores[4] == pytest.approx(expect) and np.all(scores[:4] == 0)
    assert index.search("zzz unknown", 3) == []
    with pytest.raises(ValueError, match="k must be"):
        index.search("paris", 0)
    with pytest.raises(ValueError, match="at least one document"):
        rt.BM25Index([])


def test_corpus_search_tool_format(index):
    tool = rt.CorpusSearch(index, top_k=2)
    out = tool("capital of Germany", np.random.default_rng(0))
    lines = out.split("\n")
    assert len(lines) == 2 and lines[0].startswith("Doc 1(Title: Berlin) Berlin is the capital")
    assert tool("qqq", None) == "no result"


def test_load_qa_dataset_and_env(tmp_path, index):
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps([
        {"_id": "a1", "question": "Which country is Dijon in", "answer": "France", "aliases": ["French Republic"],
         "type": "bridge", "level": "easy"},
        {"id": "a2", "question": "What is the capital of Germany?", "golden_answers": ["Berlin", "berlin city"]},
    ]))
    examples = rt.load_qa_dataset(str(qa))
    assert examples[0].prompt.endswith("Question: Which country is Dijon in?\n")
    assert examples[0].meta["aliases"] == ("French Republic",) and examples[0].meta["type"] == "bridge"
    assert examples[1].answer == "Berlin" and examples[1].meta["aliases"] == ("berlin city",)
    assert [e.uid for e in examples] == [0, 1] and examples[0].meta["id"] == "a1"
    env = rt.make_corpus_env(index, top_k=1, examples=examples)
    assert env.reset(examples[1].prompt) == examples[1].prompt
    obs, done, _, _ = env.step("<think> look up </think> <search> capital of Germany </search>")
    assert not done and information_blocks(obs)[0].startswith("Doc 1(Title: Berlin)")
    obs, done, reward, _ = env.step("<think> found </think> <answer> Berlin </answer>")
    assert done and reward == 1.0
    with pytest.raises(ValueError, match="not among"):
        env.reset("unknown prompt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="no answer"):
        rt.load_qa_dataset(str(bad))
    bad.write_text('{"question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="invalid JSON"):
        rt.load_qa_dataset(str(bad))
