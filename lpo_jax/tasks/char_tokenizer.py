"""A character-level tokenizer saved as a real Hugging Face tokenizer (for the CPU testbed).

Every character of `CHARS` is one token; the special tokens are ``<pad>`` (id 0), ``<eos>`` (1) and
``<unk>`` (2); the vocabulary has exactly 64 entries. The tokenizer is built with the `tokenizers`
library (WordLevel model, one-character pre-tokenizer, Fuse decoder), wrapped in
`PreTrainedTokenizerFast` with eos/pad/unk set and a chat template that concatenates message
contents, and saved with `save_pretrained`, so `transformers.AutoTokenizer.from_pretrained(dir)`
loads it and it goes through the same code path as real models' tokenizers.
"""
from __future__ import annotations

import os

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
CHARS = "0123456789+-*/=()<> .,:;?!abcdefghijklmnopqrstuvwxyz_#%&[]{}|"
VOCAB_SIZE = len(SPECIAL_TOKENS) + len(CHARS)
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
assert VOCAB_SIZE == 64 and len(set(CHARS)) == len(CHARS)


def vocab() -> dict[str, int]:
    return {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(CHARS))}


def build_raw_tokenizer():
    """The `tokenizers.Tokenizer` (fast; no transformers import)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=vocab(), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # matched as whole tokens, skipped when decoding
    return tok


def build_char_tokenizer():
    """A `transformers.PreTrainedTokenizerFast` over `build_raw_tokenizer()`."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=build_raw_tokenizer(),
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=512,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def save_char_tokenizer(path: str | os.PathLike) -> str:
    """Writes tokenizer.json / tokenizer_config.json / chat template into `path`; returns it."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    build_char_tokenizer().save_pretrained(path)
    return path


def encode_chars(text: str) -> list[int]:
    """Pure-Python encoding identical to the saved tokenizer's (for fast data generation)."""
    table = vocab()
    return [table.get(ch, UNK_ID) for ch in text]


def decode_chars(ids) -> str:
    """Pure-Python decoding identical to the saved tokenizer's `decode(ids, skip_special_tokens=True)`."""
    table = SPECIAL_TOKENS + tuple(CHARS)
    return "".join(table[int(i)] for i in ids if int(i) >= len(SPECIAL_TOKENS))
