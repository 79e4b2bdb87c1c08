"""Hugging Face checkpoints <-> Transformer: read/write local safetensors directories without torch.

load_hf reads config.json, builds the model abstractly (no memory), then reads one tensor at a time
with safetensors (numpy; bf16 arrives as ml_dtypes.bfloat16), converts it to our layout, casts it to the
param dtype and places it straight into its NamedSharding (each device receives only its shard), so a
full unsharded model never sits on one device.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable

import flax.nnx as nnx
import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lpo_jax.models.config import ModelConfig, _supported_message
from lpo_jax.models.sharding import AxisRules, state_shardings
from lpo_jax.models.transformer import Transformer

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A Hugging Face checkpoint directory is missing, incomplete, corrupt or of an unsupported family."""


# ------------------------------------------------------------------------------------- name mapping
def _layout(cfg: ModelConfig) -> list[tuple[tuple, str, Callable, Callable]]:
    """(our flat path, HF tensor name, hf->ours, ours->hf) for every param."""
    d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    same = lambda w: w
    transpose = lambda w: np.ascontiguousarray(w.T)
    rows = [(("embed",), "model.embed_tokens.weight", same, same),
            (("final_norm", "weight"), "model.norm.weight", same, same)]
    if not cfg.tie_embeddings:
        rows.append((("lm_head",), "lm_head.weight", transpose, transpose))
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        rows += [
            (("layers", i, "input_norm", "weight"), p + "input_layernorm.weight", same, same),
            (("layers", i, "post_attn_norm", "weight"), p + "post_attention_layernorm.weight", same, same),
            (("layers", i, "attn", "q_proj"), p + "self_attn.q_proj.weight",
             lambda w: np.ascontiguousarray(w.T).reshape(d, h, hd), lambda w: transpose(w.reshape(d, h * hd))),
            (("layers", i, "attn", "k_proj"), p + "self_attn.k_proj.weight",
             lambda w: np.ascontiguousarray(w.T).reshape(d, kv, hd), lambda w: transpose(w.reshape(d, kv * hd))),
            (("layers", i, "attn", "v_proj"), p + "self_attn.v_proj.weight",
             lambda w: np.ascontiguousarray(w.T).reshape(d, kv, hd), lambda w: transpose(w.reshape(d, kv * hd))),
            (("layers", i, "attn", "o_proj"), p + "self_attn.o_proj.weight",
             lambda w: np.ascontiguousarray(w.T).reshape(h, hd, d), lambda w: transpose(w.reshape(h * hd, d))),
            (("layers", i, "mlp", "gate_proj"), p + "mlp.gate_proj.weight", transpose, transpose),
            (("layers", i, "mlp", "up_proj"), p + "mlp.up_proj.weight", transpose, transpose),
            (("layers", i, "mlp", "down_proj"), p + "mlp.down_proj.weight", transpose, transpose),
        ]
        if cfg.qkv_bias:
            rows += [(("layers", i, "attn", "q_bias"), p + "self_attn.q_proj.bias",
                      lambda w: w.reshape(h, hd), lambda w: w.reshape(h * hd)),
                     (("layers", i, "attn", "k_bias"), p + "self_attn.k_proj.bias",
                      lambda w: w.reshape(kv, hd), lambda w: w.reshape(kv * hd)),
                     (("layers", i, "attn", "v_bias"), p + "self_attn.v_proj.bias",
                      lambda w: w.reshape(kv, hd), lambda w: w.reshape(kv * hd))]
        if cfg.qk_norm:
            rows += [(("layers", i, "attn", "q_norm", "weight"), p + "self_attn.q_norm.weight", same, same),
                     (("layers", i, "attn", "k_norm", "weight"), p + "self_attn.k_norm.weight", same, same)]
    return rows


# ------------------------------------------------------------------------------------- reading
def read_hf_config(path: str) -> dict:
    """The config.json dict of a local HF model directory (clear errors if absent or invalid)."""
    if not os.path.isdir(path):
        raise CheckpointError(f"Hugging Face model directory {path!r} does not exist (expected a local "
                              "directory with config.json and *.safetensors)")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise CheckpointError(f"{path!r} has no config.json; a Hugging Face model directory needs "
                              f"config.json and model.safetensors (or shards + {INDEX_FILE})")
    try:
        with open(config_file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file} is not valid JSON: {e}") from e


def _tensor_files(path: str) -> dict[str, str]:
    """HF tensor name -> safetensors file path, from the index (sharded) or the files themselves."""
    index_file = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index_file):
        try:
            with open(index_file) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index_file} is corrupt (needs a 'weight_map'): {e}") from e
        missing = sorted({fn for fn in weight_map.values() if not os.path.isfile(os.path.join(path, fn))})
        if missing:
            raise CheckpointError(f"safetensors shard(s) {missing} listed in {INDEX_FILE} are missing from "
                                  f"{path!r}; re-download or re-save the checkpoint")
        return {name: os.path.join(path, fn) for name, fn in weight_map.items()}
    files = sorted(fn for fn in os.listdir(path) if fn.endswith(".safetensors"))
    if not files:
        raise CheckpointError(f"{path!r} has no *.safetensors weights (only safetensors checkpoints are "
                              "supported; convert .bin/.pt with transformers' save_pretrained)")
    mapping = {}
    for fn in files:
        with _open(os.path.join(path, fn)) as f:
            mapping.update({name: os.path.join(path, fn) for name in f.keys()})
    return mapping


def _open(file: str):
    try:
        return safe_open(file, framework="numpy")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors file {file!r} (corrupt or truncated?): {e}") from e


class _Reader:
    """Reads single tensors, keeping each shard file open once."""

    def __init__(self, files: dict[str, str]):
        self.files, self.handles = files, {}

    def has(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> np.ndarray:
        file = self.files[name]
        if file not in self.handles:
            self.handles[file] = _open(file).__enter__()
        try:
            return self.handles[file].get_tensor(name)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read tensor {name!r} from {file!r} (corrupt file?): {e}") from e

    def close(self):
        for handle in self.handles.values():
            handle.__exit__(None, None, None)
        self.handles = {}


def _place(array: np.ndarray, sharding) -> jax.Array:
    """Host array -> device array; with a NamedSharding each device gets only its own slice."""
    if sharding is None:
        return jax.device_put(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def load_hf(path: str, *, dtype: str | None = None, param_dtype: str | None = None, mesh=None,
            rules: AxisRules | None = None) -> Transformer:
    """Load a local Hugging Face causal-LM directory into a Transformer.

    dtype: compute dtype (default "float32"); param_dtype: stored param dtype (default "float32", the
    fp32 master copy, whatever the checkpoint's dtype). With `mesh`, every param is placed directly into
    its NamedSharding from the logical-axis `rules` and the model gets batch-sharding constraints.
    """
    path = os.path.expanduser(os.fspath(path))
    hf_config = read_hf_config(path)
    if hf_config.get("model_type") not in ("llama", "qwen2", "qwen3", "mistral"):
        raise CheckpointError(f"unsupported model_type {hf_config.get('model_type')!r} in "
                              f"{os.path.join(path, 'config.json')}; {_supported_message()}")
    try:
        cfg = ModelConfig.from_hf(hf_config, dtype=dtype or "float32", param_dtype=param_dtype or "float32")
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{os.path.join(path, 'config.json')}: {e}") from e
    reader = _Reader(_tensor_files(path))
    layout = _layout(cfg)
    absent = [name for _, name, _, _ in layout if not reader.has(name)]
    if absent:
        hint = (" (untied model: tie_word_embeddings is false but lm_head.weight is absent)"
                if "lm_head.weight" in absent else "")
        raise CheckpointError(f"{path!r} lacks {len(absent)} tensor(s) needed by its config, e.g. "
                              f"{absent[:3]}{hint}")

    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0), mesh=mesh))
    graphdef, abstract_state = nnx.split(abstract)
    shardings = state_shardings(abstract_state, mesh, rules) if mesh is not None else None
    flat = dict(nnx.to_flat_state(abstract_state))
    flat_shardings = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    values = {}
    try:
        for our_path, name, to_ours, _ in layout:
            variable = flat[our_path]
            expected = variable.get_value()
            raw = reader.get(name)
            try:
                array = to_ours(raw)
            except ValueError as e:
                raise CheckpointError(f"tensor {name!r} has shape {raw.shape}, incompatible with config.json "
                                      f"(expected {expected.shape} in our layout): {e}") from e
            if array.shape != expected.shape:
                raise CheckpointError(f"tensor {name!r} has shape {raw.shape} -> {array.shape} in our layout, "
                                      f"but config.json implies {expected.shape}; config and weights disagree")
            array = array.astype(expected.dtype, copy=False)
            sharding = flat_shardings[our_path].get_value() if flat_shardings else None
            values[our_path] = variable.replace(_place(array, sharding))
    finally:
        reader.close()
    state = nnx.from_flat_state(sorted(values.items(), key=lambda kv: _sort_key(kv[0])))
    return nnx.merge(graphdef, state)


def _sort_key(path: tuple) -> tuple:
    return tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in path)


# ------------------------------------------------------------------------------------- writing
def _parse_size(size) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", str(size).upper())
    if not match:
        raise ValueError(f"max_shard_size must be bytes or like '5GB'/'200MB'/'64KB', got {size!r}")
    return int(float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)])


def save_hf(model: Transformer, path: str, *, dtype: str | None = None, max_shard_size="5GB") -> None:
    """Write `model` as a Hugging Face directory (config.json + safetensors, sharded with an index when
    larger than max_shard_size) that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    dtype: dtype of the written tensors (default: the model's param dtype). Params are fetched to the host
    one at a time (for multi-host meshes gather them first, e.g. with multihost_utils.process_allgather).
    """
    cfg: ModelConfig = model.cfg
    dtype = dtype or cfg.param_dtype
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    os.makedirs(path, exist_ok=True)
    limit = _parse_size(max_shard_size)
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for our_path, name, _, to_hf in _layout(cfg):
        array = to_hf(np.asarray(jax.device_get(flat[our_path].get_value()))).astype(np_dtype)
        if shards[-1] and size + array.nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = np.ascontiguousarray(array)
        size += array.nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, SINGLE_FILE), metadata=meta)
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(path, fn), metadata=meta)
            weight_map.update({name: fn for name in shard})
            total += sum(a.nbytes for a in shard.values())
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    hf_config = cfg.to_hf()
    hf_config.update(dtype=dtype, torch_dtype=dtype)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
