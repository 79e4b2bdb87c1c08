"""Shared fixtures for the tasks tests: the char tokenizer saved once and reloaded via AutoTokenizer."""
import pytest


@pytest.fixture(scope="session")
def char_tokenizer_dir(tmp_path_factory):
    from lpo_jax.tasks.char_tokenizer import save_char_tokenizer

    return save_char_tokenizer(tmp_path_factory.mktemp("char_tok"))


@pytest.fixture(scope="session")
def auto_tokenizer(char_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(char_tokenizer_dir, local_files_only=True)
