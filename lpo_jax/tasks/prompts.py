"""Prompt tokenization with a maximum-length policy.

    tokens = tokenize_prompts(tokenizer, examples, max_prompt_len=256, overflow="error")

overflow="error": the first over-long prompt raises a ValueError naming its index, its length,
the limit and the config key to change. overflow="truncate": over-long prompts keep their LAST
`max_prompt_len` tokens (left truncation keeps the end of the prompt, where the question and the
generation cue are) and are counted in `PromptTokens.n_truncated` / `.truncated`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lpo_jax.tasks.base import Example

OVERFLOW_POLICIES = ("error", "truncate")


@dataclasses.dataclass(frozen=True)
class PromptTokens:
    """ids: token ids per prompt; truncated: indices of left-truncated prompts."""

    ids: list[list[int]]
    truncated: tuple[int, ...] = ()
    max_prompt_len: int = 0

    @property
    def n_truncated(self) -> int:
        return len(self.truncated)

    def left_padded(self, pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tokens [N, L] int32, mask [N, L] int32), left padded to `length` (default max_prompt_len)."""
        length = length or self.max_prompt_len
        tokens = np.full((len(self.ids), length), pad_id, np.int32)
        mask = np.zeros((len(self.ids), length), np.int32)
        for i, ids in enumerate(self.ids):
            if len(ids) > length:
                raise ValueError(f"prompt {i} has {len(ids)} tokens, more than the padded length {length}")
            if ids:
                tokens[i, length - len(ids):] = ids
                mask[i, length - len(ids):] = 1
        return tokens, mask


def _encode(tokenizer, text: str, chat_template: bool, add_special_tokens: bool) -> list[int]:
    hf = getattr(tokenizer, "hf", tokenizer)  # lpo_jax.models.Tokenizer wraps an HF tokenizer
    if chat_template:  # the template writes any BOS itself
        text = hf.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                      add_generation_prompt=True)
        return list(hf.encode(text, add_special_tokens=False))
    return list(hf.encode(text, add_special_tokens=add_special_tokens))


def tokenize_prompts(
    tokenizer,
    prompts: Sequence[Example | str],
    *,
    max_prompt_len: int,
    overflow: str = "error",
    chat_template: bool = False,
    add_special_tokens: bool = True,
    config_key: str = "task.max_prompt_len",
) -> PromptTokens:
    """Token ids of each prompt under the length policy (see module doc).

    tokenizer: a Hugging Face tokenizer or an lpo_jax.models.Tokenizer. chat_template=True wraps
    each prompt as one user message with the tokenizer's chat template (generation prompt added).
    add_special_tokens: (without a chat template) let the tokenizer add its BOS etc., as Hugging
      Face does by default (Llama base models expect BOS; Qwen adds nothing).
    config_key: the name shown in the error message for the setting that raises the limit.
    """
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"prompt overflow policy must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
    if not isinstance(max_prompt_len, (int, np.integer)) or max_prompt_len < 1:
        raise ValueError(f"{config_key} must be a positive int, got {max_prompt_len!r}")
    out, truncated = [], []
    for i, prompt in enumerate(prompts):
        text = prompt.prompt if isinstance(prompt, Example) else prompt
        ids = _encode(tokenizer, text, chat_template, add_special_tokens)
        if not ids:
            raise ValueError(f"prompt {i} encodes to no tokens; check the dataset's prompt field")
        if len(ids) > max_prompt_len:
            if overflow == "error":
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens, more than the limit {config_key}={max_prompt_len}; "
                    f"raise {config_key} or set the overflow policy to 'truncate' (keeps the last "
                    f"{max_prompt_len} tokens)"
                )
            ids = ids[-max_prompt_len:]
            truncated.append(i)
        out.append(ids)
    return PromptTokens(ids=out, truncated=tuple(truncated), max_prompt_len=int(max_prompt_len))
