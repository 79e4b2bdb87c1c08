"""The real-use TRACE path end to end on CPU: `trace.run` with ``source="local"`` over a local HF checkpoint
(tiny random Qwen3 + a real word-level tokenizer saved with save_pretrained), a jsonl corpus searched by BM25
and HotpotQA-style train / eval files, exactly as `configs/trace_qwen3.py` wires it for a real model."""
import json
import os

import pytest
from flax import nnx

from lpo_jax.models import ModelConfig, Transformer
from lpo_jax.models.hf import save_hf
from lpo_jax.tasks.retrieval import SEARCH_R1_TEMPLATE
from lpo_jax.trace import run as trace_run

CORPUS = [
    {"id": "d0", "title": "Velmora", "text": "Velmora is a river town founded by Arlen Toss."},
    {"id": "d1", "title": "Arlen Toss", "text": "Arlen Toss was born in Quillby and mentored Brin Ode."},
    {"id": "d2", "title": "Quillby", "text": "Quillby is the capital of Saren province."},
    {"id": "d3", "title": "Brin Ode", "text": "Brin Ode wrote the Lantern Codex."},
    {"id": "d4", "title": "Saren", "text": "Saren province lies north of Velmora."},
]
TRAIN = [
    {"id": "q0", "question": "Who founded Velmora", "answer": "Arlen Toss"},
    {"id": "q1", "question": "Where was the founder of Velmora born?", "answer": "Quillby"},
    {"id": "q2", "question": "Quillby is the capital of which province?", "answer": "Saren"},
    {"id": "q3", "question": "What did Brin Ode write?", "answer": "the Lantern Codex", "aliases": ["Lantern Codex"]},
]
EVAL = [{"id": "e0", "question": "Who mentored Brin Ode?", "golden_answers": ["Arlen Toss"]},
        {"id": "e1", "question": "What lies north of Velmora?", "answer": "Saren"}]
TAGS = ["<think>", "</think>", "<search>", "</search>", "<information>", "</information>", "<answer>", "</answer>"]


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def _save_word_tokenizer(path, texts):
    """A real HF fast tokenizer (WordLevel over whitespace words of `texts`), saved like any checkpoint's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>", *TAGS]
    for text in texts:
        words += text.split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.add_special_tokens(["<pad>", "<eos>", "<unk>"])
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    hf.save_pretrained(path)
    return len(vocab)


@pytest.fixture(scope="module")
def local_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace_local")
    model_dir = str(root / "model")
    os.makedirs(model_dir)
    texts = [SEARCH_R1_TEMPLATE, *(f"{d['title']} {d['text']}" for d in CORPUS),
             *(f"{q['question']} ?" for q in TRAIN + EVAL), "Doc 1(Title: 2(Title: 3(Title: no result"]
    vocab = _save_word_tokenizer(model_dir, texts)
    cfg = ModelConfig(family="qwen3", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=True, tie_embeddings=True,
                      eos_token_id=1, max_position_embeddings=512)
    save_hf(Transformer(cfg, rngs=nnx.Rngs(0)), model_dir)
    return {"model_path": model_dir, "corpus_path": _write_jsonl(root / "corpus.jsonl", CORPUS),
            "train_path": _write_jsonl(root / "train.jsonl", TRAIN),
            "eval_path": _write_jsonl(root / "eval.jsonl", EVAL), "out": str(root / "runs")}


def _config(files, method="trace"):
    cfg = trace_run._load(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "trace_qwen3.py:" + method))
    cfg.unlock()
    cfg.output_dir, cfg.compilation_cache = files["out"], ""
    cfg.local.update(dict(model_path=files["model_path"], corpus_path=files["corpus_path"],
                          train_path=files["train_path"], eval_path=files["eval_path"], top_k=2, max_turns=2,
                          max_new_tokens=8, max_len=256, max_obs_tokens=24, n_train=0, n_eval=0, dtype="float32"))
    cfg.train.update(dict(steps=2, pool_prompts=4, roots_per_prompt=2, root_budget=4, multiplier=1, tree_group=2,
                          flat_group=2, flat_roots=4, predictor_hidden=16, predictor_batch=16, predictor_buffer=64,
                          predictor_warm=1, eval_every=0, eval_samples=1, lr=1e-3))
    return cfg


def test_local_corpus_env_searches_the_bm25_index(local_files):
    """The env the local trainer builds resolves dataset prompts and answers searches from the corpus."""
    trainer = trace_run.local_trainer(_config(local_files).local)
    assert trainer.train_prompts[1] == SEARCH_R1_TEMPLATE.format(question=TRAIN[1]["question"])
    assert trainer.heldout_prompts[0].endswith("Who mentored Brin Ode?\n")
    env = trainer.make_env(0)()
    env.reset(trainer.train_prompts[2])
    obs, done, _, _ = env.step("<search> capital of Saren province </search>")
    assert not done and "Title: Quillby" in obs.split("\n")[0], obs
    _, done, reward, _ = env.step("<answer> Saren </answer>")
    assert done and reward == 1.0
    with pytest.raises(ValueError, match="not among the env's examples"):
        env.reset("a prompt that is not in the dataset")


def test_local_run_end_to_end_writes_history_and_summary(local_files):
    """python -m lpo_jax.trace.run configs/trace_qwen3.py:trace with local files: a real run on CPU."""
    summary = trace_run.run_config(_config(local_files), log=lambda *_: None)
    run_dir = os.path.join(local_files["out"], "trace_qwen3_trace")
    with open(os.path.join(run_dir, "history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    with open(os.path.join(run_dir, "summary.json")) as f:
        saved = json.load(f)
    assert summary["steps"] == 2 and len(history) == 2
    # 4 roots per step, each with 1 continuation from one of its turn prefixes (when the root has a turn).
    assert 8 <= summary["trajectories"] <= 16
    assert summary["generated_tokens"] > 0 and summary["generated_tokens"] == history[-1]["generated_tokens"]
    assert 0.0 <= summary["accuracy"] <= 1.0 and saved["config"]["method"] == "trace"
    assert len(saved["evals"]) >= 1 and saved["evals"][0]["step"] == 0


def test_local_config_errors_name_the_missing_file(local_files):
    cfg = _config(local_files)
    cfg.local.corpus_path = os.path.join(local_files["out"], "missing.jsonl")
    with pytest.raises(ValueError, match="corpus_path"):
        trace_run.validate(cfg)
