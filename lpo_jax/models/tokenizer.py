"""Tokenizer: a thin layer over `transformers.AutoTokenizer` loaded from a local directory.

Batches come back as numpy int32 arrays with an attention mask (1 = real token), padded on the left by
default (what decoding from a static-shape KV cache needs). `build_test_tokenizer` trains a tiny
byte-level BPE with the `tokenizers` library (no downloads) and saves it with a chat template.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class Tokenizer:
    """Encode/decode batches, chat templates and special ids over a Hugging Face tokenizer."""

    def __init__(self, hf_tokenizer, *, padding_side: str = "left"):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.hf = hf_tokenizer
        self.padding_side = padding_side
        if self.hf.pad_token_id is None and self.hf.eos_token_id is None:
            raise ValueError("tokenizer has neither a pad nor an eos token; set pad_token in the "
                             "tokenizer config so batches can be padded")

    @classmethod
    def from_pretrained(cls, path: str, *, padding_side: str = "left") -> "Tokenizer":
        """Load from a local directory (tokenizer.json / tokenizer_config.json, chat template)."""
        from transformers import AutoTokenizer

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ValueError(f"tokenizer directory {path!r} does not exist (a local path is required)")
        try:
            hf = AutoTokenizer.from_pretrained(path, padding_side=padding_side, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load a tokenizer from {path!r}: {e}") from e
        return cls(hf, padding_side=padding_side)

    def save(self, path: str) -> None:
        self.hf.save_pretrained(path)

    # ------------------------------------------------------------------ special tokens
    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (incl. added tokens); a model's vocab may be larger."""
        return len(self.hf)

    @property
    def eos_id(self) -> int | None:
        return self.hf.eos_token_id

    @property
    def pad_id(self) -> int:
        """Pad id (eos when the tokenizer defines no pad token)."""
        return self.hf.pad_token_id if self.hf.pad_token_id is not None else self.hf.eos_token_id

    @property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    def stop_ids(self, extra_tokens: Sequence[str] = ()) -> tuple[int, ...]:
        """Ids that end generation: eos plus any `extra_tokens` (e.g. '<|im_end|>') known to the vocab."""
        ids = [self.eos_id] if self.eos_id is not None else []
        for token in extra_tokens:
            token_id = self.hf.convert_tokens_to_ids(token)
            if token_id is None or token_id == self.hf.unk_token_id:
                raise ValueError(f"stop token {token!r} is not in the vocabulary")
            ids.append(token_id)
        return tuple(dict.fromkeys(ids))

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}; use encode_batch for lists")
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of strings, got one str")
        return [self.encode(t, add_special_tokens=add_special_tokens) for t in texts]

    def pad(self, ids: Sequence[Sequence[int]], *, length: int | None = None,
            truncate: str = "left") -> tuple[np.ndarray, np.ndarray]:
        """(tokens_BT int32, mask_BT int32) padded to `length` (default: longest) on `padding_side`.

        Sequences longer than `length` lose tokens on the `truncate` side ('left' keeps the end, which
        is what a prompt followed by generation needs; 'error' raises)."""
        longest = max((len(x) for x in ids), default=0)
        length = longest if length is None else length
        tokens = np.full((len(ids), length), self.pad_id, np.int32)
        mask = np.zeros((len(ids), length), np.int32)
        for row, seq in enumerate(ids):
            seq = list(seq)
            if len(seq) > length:
                if truncate == "error":
                    raise ValueError(f"sequence {row} has {len(seq)} tokens > length {length}")
                seq = seq[len(seq) - length:] if truncate == "left" else seq[:length]
            n = len(seq)
            start = length - n if self.padding_side == "left" else 0
            tokens[row, start:start + n] = seq
            mask[row, start:start + n] = 1
        return tokens, mask

    def __call__(self, texts: Sequence[str], *, length: int | None = None,
                 add_special_tokens: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Encode and pad a batch of strings: (tokens_BT, mask_BT)."""
        return self.pad(self.encode_batch(texts, add_special_tokens=add_special_tokens), length=length)

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        return self.hf.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, tokens_BT, mask_BT=None, *, skip_special_tokens: bool = True) -> list[str]:
        """Decode each row, keeping only positions where mask_BT is 1 (all if no mask)."""
        tokens_BT = np.asarray(tokens_BT)
        if tokens_BT.ndim != 2:
            raise ValueError(f"decode_batch expects tokens [B, T], got shape {tokens_BT.shape}")
        mask_BT = np.ones_like(tokens_BT, bool) if mask_BT is None else np.asarray(mask_BT).astype(bool)
        return [self.decode(row[m], skip_special_tokens=skip_special_tokens) for row, m in zip(tokens_BT, mask_BT)]

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs):
        """Render one conversation with the tokenizer's chat template: a str, or ids if tokenize=True."""
        if not getattr(self.hf, "chat_template", None):
            raise ValueError("this tokenizer has no chat template; set tokenizer.hf.chat_template (a jinja "
                             "string) or save one as chat_template.jinja next to tokenizer.json")
        text = self.hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                           tokenize=False, **kwargs)
        return self.encode(text) if tokenize else text

    def chat_batch(self, conversations: list[list[dict]], *, length: int | None = None,
                   add_generation_prompt: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Render and pad a batch of conversations: (tokens_BT, mask_BT)."""
        return self.pad([self.apply_chat_template(c, add_generation_prompt=add_generation_prompt, tokenize=True)
                         for c in conversations], length=length)


def build_test_tokenizer(path: str, *, texts: Sequence[str] | None = None, vocab_size: int = 384,
                         chat_template: str = DEFAULT_CHAT_TEMPLATE) -> Tokenizer:
    """Train a tiny byte-level BPE (special tokens <|endoftext|> = eos/pad, <|im_start|>, <|im_end|>),
    save it as a transformers tokenizer with a chat template in `path`, and load it back through
    `Tokenizer.from_pretrained`. For tests and demos: no downloads, well under a second."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts) if texts is not None else [
        "The quick brown fox jumps over the lazy dog.", "What is 12 + 30? The answer is 42.",
        "user assistant system: solve the problem step by step.", "0123456789 + - * / = ( )",
    ] * 4
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(texts, trainer=trainer)
    os.makedirs(path, exist_ok=True)
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=specials[1:])
    hf.chat_template = chat_template
    hf.save_pretrained(path)
    return Tokenizer.from_pretrained(path)
