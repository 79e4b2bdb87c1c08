"""ModelConfig: one hashable description of a decoder-only transformer (Llama 3, Qwen2/2.5, Qwen3, Mistral).

The config is a frozen dataclass, so it can be a static `jax.jit` argument and a dict key.
`from_hf` / `to_hf` map it to and from a Hugging Face `config.json` dictionary; both the transformers v5
RoPE form (`rope_parameters`) and the older one (`rope_theta` + `rope_scaling`) are read.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

SUPPORTED_FAMILIES = ("llama", "qwen2", "qwen3", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
}
_DTYPES = ("float32", "bfloat16", "float16")


def _supported_message() -> str:
    return (f"supported model families (config.json model_type): {', '.join(SUPPORTED_FAMILIES)} "
            "(Llama 3.x, Qwen2/Qwen2.5 incl. DeepSeek-R1-Distill-Qwen, Qwen3, Mistral)")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture + dtypes of a decoder-only transformer.

    rope_scaling: None, or a sorted tuple of (key, value) pairs holding the HF scaling fields, e.g.
      (("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
       ("original_max_position_embeddings", 8192), ("rope_type", "llama3")).
    sliding_window: None (full causal attention) or a window W: a query attends to the W most recent
      slots including itself (Mistral v0.1 layout; measured in slots, which equal positions for
      left-padded rows).
    param_dtype: dtype of stored (master) params; dtype: compute dtype of activations and matmuls.
    """
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    max_position_embeddings: int = 4096
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple | None = None
    param_dtype: str = "float32"
    dtype: str = "float32"

    def __post_init__(self):
        if self.family not in SUPPORTED_FAMILIES:
            raise ValueError(f"unsupported model family {self.family!r}; {_supported_message()}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads}) for grouped-query attention")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"ModelConfig.{name} must be one of {_DTYPES}, got {getattr(self, name)!r}")
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", _freeze(self.rope_scaling))
        rope_type = self.rope_scaling_dict.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"unsupported rope_type {rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}")

    # ------------------------------------------------------------------ helpers
    @property
    def rope_scaling_dict(self) -> dict:
        return dict(self.rope_scaling) if self.rope_scaling else {}

    @property
    def num_groups(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        d, h, kv, hd, f, v = (self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim,
                              self.intermediate_size, self.vocab_size)
        attn = d * hd * (h + 2 * kv) + h * hd * d + (hd * (h + 2 * kv) if self.qkv_bias else 0)
        attn += 2 * hd if self.qk_norm else 0
        layer = attn + 3 * d * f + 2 * d
        return self.num_layers * layer + v * d * (1 if self.tie_embeddings else 2) + d

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls, family: str = "qwen3", **overrides) -> "ModelConfig":
        """A few-thousand-parameter model of the given family, for tests (vocab 256, 2 layers)."""
        if family not in SUPPORTED_FAMILIES:
            raise ValueError(f"unknown family {family!r}; {_supported_message()}")
        base: dict[str, Any] = dict(family=family, vocab_size=256, hidden_size=32, intermediate_size=64,
                                    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                    max_position_embeddings=512)
        if family == "llama":
            base.update(rope_theta=500000.0, rope_scaling=_freeze(dict(
                rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=64)))
        elif family == "qwen2":
            base.update(qkv_bias=True, tie_embeddings=True, rope_theta=1000000.0)
        elif family == "qwen3":
            base.update(qk_norm=True, head_dim=16, rope_theta=1000000.0)
        base.update(overrides)
        return cls(**base)

    # ------------------------------------------------------------------ HF mapping
    @classmethod
    def from_hf(cls, hf: dict, **overrides) -> "ModelConfig":
        """Build from a Hugging Face config.json dict; `overrides` (e.g. dtype=...) win."""
        if not isinstance(hf, dict):
            raise TypeError(f"ModelConfig.from_hf expects the config.json dict, got {type(hf).__name__}")
        family = hf.get("model_type")
        if family not in SUPPORTED_FAMILIES:
            raise ValueError(f"unsupported model_type {family!r} in config.json; {_supported_message()}")
        act = hf.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"unsupported hidden_act {act!r}: only SwiGLU (silu) MLPs are supported")
        if hf.get("mlp_bias"):
            raise ValueError("mlp_bias=True is not supported (no supported family uses MLP biases)")
        if family != "qwen2" and hf.get("attention_bias"):
            raise ValueError(f"attention_bias=True is not supported for {family}")
        if family in ("qwen2", "qwen3") and hf.get("use_sliding_window"):
            raise ValueError(f"use_sliding_window=True is not supported for {family}; set it to false")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise ValueError(f"config.json lacks required keys {missing}")
        heads = hf["num_attention_heads"]
        theta, scaling = _read_rope(hf)
        eos = hf.get("eos_token_id")
        kwargs = dict(
            family=family,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            qkv_bias=family == "qwen2",
            qk_norm=family == "qwen3",
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
            sliding_window=hf.get("sliding_window") if family == "mistral" else None,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """A config.json dict that transformers' AutoConfig reads (v5 `rope_parameters` form plus the
        older `rope_theta`/`rope_scaling` keys, so older transformers read it too)."""
        rope = {"rope_type": "default", **self.rope_scaling_dict, "rope_theta": self.rope_theta}
        out = {
            "architectures": [_HF_ARCHITECTURES[self.family]],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_embeddings,
            "rope_parameters": rope,
            "rope_theta": self.rope_theta,
            "rope_scaling": ({k: v for k, v in rope.items() if k != "rope_theta"}
                             if self.rope_scaling else None),
            "attention_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
            "dtype": self.param_dtype,
            "torch_dtype": self.param_dtype,
            "use_cache": True,
        }
        if self.family == "mistral":
            out["sliding_window"] = self.sliding_window
        if self.family in ("qwen2", "qwen3"):
            out.update(use_sliding_window=False, sliding_window=None)
        return out


def _freeze(d: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def _read_rope(hf: dict) -> tuple[float, tuple | None]:
    """(rope_theta, hashable scaling or None) from either HF form."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and params:
        params = dict(params)
        theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    else:
        theta = hf.get("rope_theta", 10000.0)
        params = dict(hf.get("rope_scaling") or {})
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.pop("type", None)
    rope_type = params.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope_type {rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}")
    if rope_type == "default":
        return float(theta), None
    keep = {"rope_type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
    return float(theta), _freeze({k: v for k, v in params.items() if k in keep})
