"""Local jsonl / json / parquet loading, field mapping, and the lazy `datasets` import."""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lpo_jax.tasks.datasets import DatasetConfig, load_examples, load_records

ROWS = [{"problem": "1+1?", "solution": "\\boxed{2}", "level": "L1"},
        {"problem": "2+2?", "solution": "\\boxed{4}", "level": "L2"}]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return str(path)


def test_jsonl_json_parquet_give_the_same_records(tmp_path):
    a = load_records(_write_jsonl(tmp_path / "d.jsonl", ROWS))
    (tmp_path / "d.json").write_text(json.dumps({"data": ROWS}))
    b = load_records(str(tmp_path / "d.json"))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    c = load_records(str(tmp_path / "d.parquet"))
    assert a == b == c == ROWS
    assert load_records(str(tmp_path / "d.parquet"), limit=1) == ROWS[:1]


def test_directory_picks_files_of_the_split(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[:1]), tmp_path / "data" / "test-00000-of-00001.parquet")
    assert len(load_records(str(tmp_path), split="train")) == 2
    assert len(load_records(str(tmp_path), split="test")) == 1
    with pytest.raises(ValueError, match="'validation'"):
        load_records(str(tmp_path), split="validation")


def test_math_field_mapping_and_template(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", ROWS)
    exs = load_examples({"source": path, "task": "math", "meta_fields": ("level",)})
    assert exs[1].answer == "\\boxed{4}" and exs[1].meta["level"] == "L2" and exs[1].uid == 1
    assert exs[0].prompt.startswith("1+1?") and "\\boxed{}" in exs[0].prompt
    plain = load_examples(DatasetConfig(source=path, prompt_field="problem", answer_field="solution",
                                        prompt_template="Q: {prompt}\nA:"))
    assert plain[0].prompt == "Q: 1+1?\nA:"


def test_countdown_records_with_renamed_columns(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"goal": 24, "numbers": [4, 6, 1]}])
    ex = load_examples({"source": path, "task": "countdown", "fields": {"target": "goal", "nums": "numbers"}})[0]
    assert ex.meta["target"] == 24 and ex.meta["nums"] == (4, 6, 1) and "[4, 6, 1]" in ex.prompt


def test_clear_errors(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", ROWS)
    with pytest.raises(ValueError, match="no column 'question'.*fields="):
        load_examples({"source": path, "prompt_field": "question"})
    with pytest.raises(ValueError, match="unknown dataset config keys"):
        load_examples({"source": path, "promt_field": "problem"})
    with pytest.raises(ValueError, match="task must be one of"):
        DatasetConfig(source=path, task="chess")
    with pytest.raises(FileNotFoundError):
        load_records(str(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_records(str(tmp_path / "bad.jsonl"))


def test_hub_name_without_datasets_library_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail even if installed
    with pytest.raises(ImportError, match="pip install datasets"):
        load_records("Jiayi-Pan/Countdown-Tasks-3to4")
