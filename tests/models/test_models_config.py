"""ModelConfig: HF mapping both ways, RoPE config forms, presets, validation."""
import jax
import pytest

from lpo_jax.models import SUPPORTED_FAMILIES, ModelConfig
from models_testlib import HF_FAMILIES, hf_config


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_tiny_presets_roundtrip_through_hf_dict_and_transformers(family):
    import transformers as T

    cfg = ModelConfig.tiny(family, eos_token_id=[1, 2])
    assert cfg.eos_token_id == (1, 2) and hash(cfg) == hash(ModelConfig.tiny(family, eos_token_id=(1, 2)))
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    hf = T.AutoConfig.for_model(**cfg.to_hf())        # transformers accepts what we write
    assert ModelConfig.from_hf(hf.to_dict()) == cfg


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_from_transformers_configs(family):
    hf = hf_config(family).to_dict()
    cfg = ModelConfig.from_hf(hf, dtype="bfloat16")
    assert cfg.dtype == "bfloat16" and cfg.param_dtype == "float32"
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.num_groups) == (4, 2, 2)
    assert cfg.head_dim == (24 if family == "qwen3" else 12)
    assert cfg.qkv_bias == family.startswith("qwen2") and cfg.qk_norm == (family == "qwen3")
    assert cfg.tie_embeddings == (family == "qwen2_tied")
    assert cfg.sliding_window == (5 if family == "mistral" else None)
    assert (cfg.rope_scaling_dict.get("rope_type") == "llama3") == (family == "llama")


def test_rope_forms_agree():
    v5 = {"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
          "num_hidden_layers": 1, "num_attention_heads": 2,
          "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}}
    old = {**{k: v for k, v in v5.items() if k != "rope_parameters"},
           "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}}
    plain = {**{k: v for k, v in v5.items() if k != "rope_parameters"}, "rope_theta": 1e6, "rope_scaling": None}
    assert ModelConfig.from_hf(v5) == ModelConfig.from_hf(old)
    assert ModelConfig.from_hf(v5).rope_scaling == (("factor", 2.0), ("rope_type", "linear"))
    assert ModelConfig.from_hf(plain).rope_scaling is None and ModelConfig.from_hf(plain).rope_theta == 1e6
    assert ModelConfig.from_hf(v5).num_kv_heads == 2 and ModelConfig.from_hf(v5).head_dim == 4


def test_config_is_a_static_jit_argument():
    cfg = ModelConfig.tiny("llama")
    f = jax.jit(lambda c: c.num_heads * 2, static_argnums=0)
    assert f(cfg) == 8


def test_validation_errors():
    with pytest.raises(ValueError, match="unsupported model family 'gpt2'.*llama, qwen2, qwen3, mistral"):
        ModelConfig.tiny("qwen3").replace(family="gpt2")
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelConfig.tiny("qwen3", num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="head_dim must be even"):
        ModelConfig.tiny("qwen3", head_dim=7)
    with pytest.raises(ValueError, match="dtype must be one of"):
        ModelConfig.tiny("qwen3", dtype="int8")
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        ModelConfig.tiny("qwen3", vocab_size=0)
    base = ModelConfig.tiny("llama").to_hf()
    for change, message in [({"hidden_act": "gelu"}, "SwiGLU"), ({"mlp_bias": True}, "mlp_bias"),
                            ({"attention_bias": True}, "attention_bias"),
                            ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}}, "rope_type 'yarn'")]:
        with pytest.raises(ValueError, match=message):
            ModelConfig.from_hf({**base, **change})
    with pytest.raises(ValueError, match="lacks required keys"):
        ModelConfig.from_hf({"model_type": "qwen2"})
    with pytest.raises(ValueError, match="use_sliding_window"):
        ModelConfig.from_hf({**ModelConfig.tiny("qwen2").to_hf(), "use_sliding_window": True})
