"""lpo_jax.models: decoder-only transformer (Llama 3.x, Qwen2/2.5, Qwen3, Mistral), static-shape KV cache,
Hugging Face checkpoint I/O, tokenizer wrapper and logical-axis sharding."""
from lpo_jax.models.cache import KVCache
from lpo_jax.models.config import SUPPORTED_FAMILIES, ModelConfig
from lpo_jax.models.hf import CheckpointError, load_hf, read_hf_config, save_hf
from lpo_jax.models.sharding import (DEFAULT_RULES, batch_sharding, cache_shardings, create_model,
                                     logical_to_spec, model_shardings, shard_model, state_shardings)
from lpo_jax.models.tokenizer import Tokenizer, build_test_tokenizer
from lpo_jax.models.transformer import Transformer, extend, forward, positions_from_mask

__all__ = [
    "CheckpointError", "DEFAULT_RULES", "KVCache", "ModelConfig", "SUPPORTED_FAMILIES", "Tokenizer",
    "Transformer", "batch_sharding", "build_test_tokenizer", "cache_shardings", "create_model", "extend",
    "forward", "load_hf", "logical_to_spec", "model_shardings", "positions_from_mask", "read_hf_config",
    "save_hf", "shard_model", "state_shardings",
]
