"""Shared fixtures of the training tests."""
import pytest

from lpo_jax.tasks.testbed_policy import tiny_random_policy


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    """A tiny random Qwen3-style policy saved as a real HF directory with the testbed's char tokenizer."""
    return tiny_random_policy(str(tmp_path_factory.mktemp("tiny_policy")))
