"""Tokenizer wrapper: a tiny byte-level BPE trained in the test, saved with a chat template, loaded back
through AutoTokenizer (Tokenizer.from_pretrained)."""
import numpy as np
import pytest

from lpo_jax.models import Tokenizer, build_test_tokenizer

TEXTS = ["What is 12 + 30?", "The quick brown fox jumps.", "ok"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_test_tokenizer(str(path))
    return Tokenizer.from_pretrained(str(path))      # the AutoTokenizer path, from the saved directory


def test_special_tokens(tok):
    assert tok.eos_id == tok.pad_id == tok.hf.convert_tokens_to_ids("<|endoftext|>")
    im_end = tok.hf.convert_tokens_to_ids("<|im_end|>")
    assert tok.stop_ids(["<|im_end|>"]) == (tok.eos_id, im_end)
    assert 256 < tok.vocab_size <= 384
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.stop_ids(["<|nope|>"])


def test_encode_decode_batch_roundtrip(tok):
    ids = tok.encode_batch(TEXTS)
    assert [tok.decode(x) for x in ids] == TEXTS
    assert len(ids[0]) < len(TEXTS[0])                # BPE merged something
    tokens, mask = tok(TEXTS)
    assert tokens.dtype == np.int32 and tokens.shape == mask.shape == (3, max(map(len, ids)))
    assert tok.decode_batch(tokens, mask) == TEXTS
    assert tok.decode_batch(tokens) == TEXTS          # pads are special tokens: skipped


def test_left_padding_layout(tok):
    ids = tok.encode_batch(TEXTS)
    tokens, mask = tok.pad(ids, length=12)
    for row, seq in enumerate(ids):
        n = min(len(seq), 12)
        assert mask[row].sum() == n and mask[row, 12 - n:].all()    # real tokens flush right
        np.testing.assert_array_equal(tokens[row, 12 - n:], seq[-n:])  # too long: keeps the end
        assert (tokens[row, :12 - n] == tok.pad_id).all()
    with pytest.raises(ValueError, match="> length 3"):
        tok.pad(ids, length=3, truncate="error")


def test_right_padding_option(tmp_path):
    right = build_test_tokenizer(str(tmp_path))
    right = Tokenizer(right.hf, padding_side="right")
    tokens, mask = right.pad([[5, 6], [7]])
    np.testing.assert_array_equal(mask, [[1, 1], [1, 0]])
    np.testing.assert_array_equal(tokens[:, 0], [5, 7])
    with pytest.raises(ValueError, match="padding_side"):
        Tokenizer(right.hf, padding_side="middle")


def test_chat_template(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    text = tok.apply_chat_template(messages)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tok.apply_chat_template(messages, tokenize=True)
    assert ids[0] == tok.hf.convert_tokens_to_ids("<|im_start|>") and tok.decode(ids, skip_special_tokens=False) == text
    assert not tok.apply_chat_template(messages, add_generation_prompt=False).endswith("assistant\n")
    tokens, mask = tok.chat_batch([messages, messages[1:]])
    assert tokens.shape[0] == 2 and mask[1].sum() < mask[0].sum() and mask[:, -1].all()


def test_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Tokenizer.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="encode_batch"):
        tok.encode(["a list"])
    with pytest.raises(TypeError, match="one str"):
        tok.encode_batch("a string")
    with pytest.raises(ValueError, match=r"tokens \[B, T\]"):
        tok.decode_batch(np.zeros(3, np.int32))
    plain = build_test_tokenizer(str(tmp_path / "plain"))
    plain.hf.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        plain.apply_chat_template([{"role": "user", "content": "hi"}])
