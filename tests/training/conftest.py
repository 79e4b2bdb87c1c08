"""Shared fixtures of the training tests."""
import pytest
from flax import nnx

from lpo_jax.models import ModelConfig, Transformer
from lpo_jax.models.hf import save_hf
from lpo_jax.tasks import char_tokenizer


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    """A tiny random Qwen3-style policy saved as a real HF directory with the testbed's char tokenizer."""
    path = str(tmp_path_factory.mktemp("tiny_policy"))
    cfg = ModelConfig(family="qwen3", vocab_size=char_tokenizer.VOCAB_SIZE, hidden_size=32, intermediate_size=64,
                      num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=True, tie_embeddings=True,
                      eos_token_id=char_tokenizer.EOS_ID)
    save_hf(Transformer(cfg, rngs=nnx.Rngs(0)), path)
    char_tokenizer.save_char_tokenizer(path)
    return path
