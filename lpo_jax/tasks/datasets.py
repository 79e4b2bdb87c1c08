"""Loading prompt datasets: local jsonl / json / parquet files or a Hugging Face dataset name.

`load_records(source, split=...)` returns plain dicts; `load_examples(config)` maps them to
`Example`s with a field mapping chosen by config, so any column layout works:

    load_examples({"source": "data/countdown.parquet", "task": "countdown"})
    load_examples({"source": "DigitalLearningGmbH/MATH-lighteval", "task": "math",
                   "fields": {"prompt": "problem", "answer": "solution"}})

The `datasets` library is optional and imported only when `source` is not a local path.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Mapping, Sequence

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.countdown import countdown_examples

_LOCAL_EXTENSIONS = (".jsonl", ".json", ".parquet")
DEFAULT_FIELDS = {
    "generic": {"prompt": "prompt", "answer": "answer"},
    "math": {"prompt": "problem", "answer": "solution"},
    "countdown": {"target": "target", "nums": "nums"},
}
MATH_INSTRUCTION = "{prompt}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Where prompts come from and how records map to `Example`s.

    source: a .jsonl/.json/.parquet file, a directory of them (files whose name contains `split`
      are used, e.g. HF's data/train-00000-of-00001.parquet), or a Hugging Face dataset name.
    task: "generic" | "math" | "countdown" - picks default `fields` (and the Countdown prompt).
    fields: canonical name -> record column; merged over the task defaults (generic:
      prompt<-"prompt", answer<-"answer"; math: prompt<-"problem", answer<-"solution";
      countdown: target<-"target", nums<-"nums").
    prompt_field / answer_field: shorthands for fields["prompt"] / fields["answer"] (None = keep;
      ignored by the countdown task, whose prompt is built from target and nums).
    prompt_template: str.format template with {prompt} (generic/math); None = the task default
      (math: an instruction to put the answer in \\boxed{}; generic: the prompt as is).
    countdown_style: "base" | "chat" (see countdown.countdown_prompt).
    limit: keep the first `limit` records (after loading, before anything else).
    meta_fields: extra record columns copied into Example.meta.
    """

    source: str
    split: str = "train"
    task: str = "generic"
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    prompt_field: str | None = None
    answer_field: str | None = None
    prompt_template: str | None = None
    countdown_style: str = "base"
    limit: int | None = None
    meta_fields: tuple[str, ...] = ()

    def __post_init__(self):
        if self.task not in DEFAULT_FIELDS:
            raise ValueError(f"dataset task must be one of {sorted(DEFAULT_FIELDS)}, got {self.task!r}")
        unknown = set(self.fields) - set(DEFAULT_FIELDS[self.task])
        if unknown:
            raise ValueError(
                f"dataset fields {sorted(unknown)} are not used by task {self.task!r}; "
                f"valid keys: {sorted(DEFAULT_FIELDS[self.task])}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"dataset limit must be a positive int or None, got {self.limit}")
        fields = {**DEFAULT_FIELDS[self.task], **dict(self.fields)}
        if self.task != "countdown":
            fields.update({k: v for k, v in (("prompt", self.prompt_field), ("answer", self.answer_field)) if v})
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "meta_fields", tuple(self.meta_fields))

    @classmethod
    def from_mapping(cls, cfg: "DatasetConfig | Mapping[str, Any]") -> "DatasetConfig":
        """Accepts a DatasetConfig, a dict or an ml_collections ConfigDict."""
        if isinstance(cfg, cls):
            return cfg
        data = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown dataset config keys {sorted(unknown)}; valid keys: {sorted(names)}")
        return cls(**data)


def read_records_file(path: str) -> list[dict[str, Any]]:
    """Records of one local .jsonl / .json ({'data' or 'examples': [...]} too) / .parquet file."""
    if path.endswith(".jsonl"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{line_no}: invalid JSON line ({exc.msg})") from None
        return rows
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict):
            data = data.get("data", data.get("examples"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records (or {{'data': [...]}})")
        return data
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"unsupported dataset file {path!r}; use one of {_LOCAL_EXTENSIONS}")


def _local_files(source: str, split: str) -> list[str]:
    if os.path.isfile(source):
        return [source]
    files = sorted(
        p for ext in _LOCAL_EXTENSIONS for p in glob.glob(os.path.join(source, "**", "*" + ext), recursive=True)
    )
    chosen = [p for p in files if split in os.path.basename(p)]
    if not chosen:
        raise ValueError(
            f"no {'/'.join(_LOCAL_EXTENSIONS)} file with {split!r} in its name under {source!r} "
            f"(found {len(files)} data files); pass a file path or the right split"
        )
    return chosen


def _load_hub(name: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets  # noqa: F401 - optional dependency
    except ImportError:
        raise ImportError(
            f"{name!r} is not a local file or directory, so it would be loaded from the Hugging Face "
            "Hub, which needs the `datasets` library: `pip install datasets` (or download the "
            "files and pass their local path)"
        ) from None
    return list(datasets.load_dataset(name, split=split))


def load_records(source: str, *, split: str = "train", limit: int | None = None) -> list[dict[str, Any]]:
    """Records (dicts) from a local file/directory, else from the Hugging Face Hub."""
    source = os.path.expanduser(os.fspath(source))
    if os.path.exists(source):
        rows = [row for path in _local_files(source, split) for row in read_records_file(path)]
    elif source.endswith(_LOCAL_EXTENSIONS) or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset file {source!r} does not exist")
    else:
        rows = _load_hub(source, split)
    return rows[:limit] if limit is not None else rows


def _field(rec: Mapping[str, Any], column: str, index: int, key: str) -> Any:
    if column not in rec:
        raise ValueError(
            f"record {index} has no column {column!r} (columns: {sorted(rec)}); set "
            f"fields={{'{key}': '<column>'}} in the dataset config"
        )
    return rec[column]


def records_to_examples(records: Sequence[Mapping[str, Any]], cfg: DatasetConfig) -> list[Example]:
    """Maps records to Examples according to `cfg.task` / `cfg.fields` (uids 0..n-1)."""
    f = cfg.fields
    if cfg.task == "countdown":
        renamed = [
            {"target": _field(r, f["target"], i, "target"), "nums": _field(r, f["nums"], i, "nums")}
            for i, r in enumerate(records)
        ]
        out = countdown_examples(renamed, style=cfg.countdown_style)
        if cfg.meta_fields:
            out = [dataclasses.replace(e, meta={**e.meta, **{k: r.get(k) for k in cfg.meta_fields}})
                   for e, r in zip(out, records)]
        return out
    template = cfg.prompt_template or (MATH_INSTRUCTION if cfg.task == "math" else "{prompt}")
    out = []
    for i, rec in enumerate(records):
        prompt = str(_field(rec, f["prompt"], i, "prompt"))
        answer = str(_field(rec, f["answer"], i, "answer"))
        meta = {k: rec.get(k) for k in cfg.meta_fields}
        out.append(Example(prompt=template.format(prompt=prompt), answer=answer, meta=meta, uid=i))
    return out


def load_examples(cfg: DatasetConfig | Mapping[str, Any]) -> list[Example]:
    """`load_records` + `records_to_examples` for one dataset config (dict / ConfigDict accepted)."""
    cfg = DatasetConfig.from_mapping(cfg)
    records = load_records(cfg.source, split=cfg.split, limit=cfg.limit)
    if not records:
        raise ValueError(f"dataset {cfg.source!r} (split {cfg.split!r}) has no records")
    return records_to_examples(records, cfg)
