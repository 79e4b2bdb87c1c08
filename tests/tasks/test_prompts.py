"""Prompt tokenization: the 'error' and 'truncate' max-length policies."""
import numpy as np
import pytest

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.char_tokenizer import encode_chars
from lpo_jax.tasks.prompts import tokenize_prompts

PROMPTS = [Example(prompt="s:123="), Example(prompt="r:98765432="), "s:1="]


def test_within_limit_matches_plain_encoding(auto_tokenizer):
    out = tokenize_prompts(auto_tokenizer, PROMPTS, max_prompt_len=16)
    assert out.ids == [encode_chars("s:123="), encode_chars("r:98765432="), encode_chars("s:1=")]
    assert out.n_truncated == 0
    tokens, mask = out.left_padded(pad_id=0)
    assert tokens.shape == (3, 16) and mask.sum(1).tolist() == [6, 11, 4]
    np.testing.assert_array_equal(tokens[2, -4:], encode_chars("s:1="))


def test_error_policy_names_index_length_limit_and_key(auto_tokenizer):
    with pytest.raises(ValueError) as info:
        tokenize_prompts(auto_tokenizer, PROMPTS, max_prompt_len=8, config_key="task.max_prompt_len")
    msg = str(info.value)
    assert "prompt 1 " in msg and "11 tokens" in msg and "task.max_prompt_len=8" in msg and "truncate" in msg


def test_truncate_policy_keeps_the_end_and_counts(auto_tokenizer):
    out = tokenize_prompts(auto_tokenizer, PROMPTS, max_prompt_len=8, overflow="truncate")
    assert out.ids[1] == encode_chars("r:98765432=")[-8:] and out.ids[1][-1] == encode_chars("=")[0]
    assert out.n_truncated == 1 and out.truncated == (1,)
    assert out.ids[0] == encode_chars("s:123=")


def test_bad_policy_and_chat_template(auto_tokenizer):
    with pytest.raises(ValueError, match="overflow policy"):
        tokenize_prompts(auto_tokenizer, PROMPTS, max_prompt_len=8, overflow="drop")
    out = tokenize_prompts(auto_tokenizer, ["s:12="], max_prompt_len=8, chat_template=True)
    assert out.ids == [encode_chars("s:12=")]  # the testbed template concatenates message contents


def test_accepts_the_lpo_jax_tokenizer_wrapper(char_tokenizer_dir, auto_tokenizer):
    from lpo_jax.models import Tokenizer

    wrapped = Tokenizer.from_pretrained(char_tokenizer_dir)
    assert tokenize_prompts(wrapped, PROMPTS, max_prompt_len=16).ids == \
        tokenize_prompts(auto_tokenizer, PROMPTS, max_prompt_len=16).ids
