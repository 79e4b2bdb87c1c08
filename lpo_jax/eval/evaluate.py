"""Held-out evaluation: sample k completions per prompt, grade them, report avg@k and pass@k."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from lpo_jax import hosts
from lpo_jax.eval.metrics import avg_at_k, pass_at_k
from lpo_jax.tasks.base import Example, score_completions


def decode_completions(tokenizer, out, stop_strings: Sequence[str] = ()) -> list[str]:
    """Completion texts of a SampleOutput, cut after the first stop string (the stop string is kept)."""
    texts = []
    for row, length in zip(out.tokens, out.lengths):
        text = tokenizer.decode(row[:length], skip_special_tokens=True)
        for stop in stop_strings:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut + len(stop)]
        texts.append(text)
    return texts


def evaluate(sampler, tokenizer, examples: Sequence[Example], prompt_tokens: Sequence[Sequence[int]],
             reward_fn: Callable[[str, Example], float], sampling_cfg, k: int, key, *,
             stop_strings: Sequence[str] = (), chunk: int = 64) -> dict:
    """{"eval_accuracy": avg@k, "eval_pass@k": pass@k}; a sample is correct when its reward is >= 1.

    Multi-host: each process evaluates its block of the prompts (the list padded by wrapping around to a
    multiple of the process count) and the results are gathered, so every process returns the same figures.
    """
    if len(examples) != len(prompt_tokens) or not examples:
        raise ValueError(f"need one token list per example (got {len(examples)} examples, "
                         f"{len(prompt_tokens)} token lists)")
    n = len(examples)
    if hosts.count() > 1:
        order = np.arange(-(-n // hosts.count()) * hosts.count()) % n
        mine = order[hosts.block(len(order))]
        examples, prompt_tokens = [examples[i] for i in mine], [prompt_tokens[i] for i in mine]
    correct = []
    for start in range(0, len(examples), chunk):
        prompts = list(prompt_tokens[start:start + chunk])
        out = sampler.generate(prompts, jax.random.fold_in(key, start), sampling_cfg, num_samples=k)
        texts = decode_completions(tokenizer, out, stop_strings)
        batch = examples[start:start + chunk]
        rewards, _ = score_completions(reward_fn, texts, [batch[i // k] for i in range(len(texts))])
        correct.append(np.asarray(rewards).reshape(len(prompts), k) >= 1.0)
    correct = hosts.allgather(np.concatenate(correct))[:n]
    return {"eval_accuracy": avg_at_k(correct), f"eval_pass@{k}": pass_at_k(correct, k)}
