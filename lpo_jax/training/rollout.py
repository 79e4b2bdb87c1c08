"""From selected prompts to a scored rollout batch: generate K samples per prompt, decode, reward, assemble.

Host-side glue around the jitted sampler: the sampler returns token arrays; decoding and reward functions run
in Python; the result is a ``Rollouts`` record of numpy arrays that ``training.step.TrainBatch`` is cut from.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from lpo_jax.tasks.base import Example, score_completions


@dataclasses.dataclass
class Rollouts:
    """B prompts x K samples; sequences are the left-padded prompt (P) followed by the completion (T).

    ``successes_B`` counts samples with reward >= 1 (the "correct" convention of the selection spec).
    """

    prompt_ids_B: np.ndarray
    tokens_BKL: np.ndarray
    attn_mask_BKL: np.ndarray
    loss_mask_BKT: np.ndarray
    sampler_logp_BKT: np.ndarray
    rewards_BK: np.ndarray
    successes_B: np.ndarray
    completions: list[str]
    reward_errors: int
    reward_first_error: str | None
    generated_tokens: int

    @property
    def group_size(self) -> int:
        return self.tokens_BKL.shape[1]


def assemble(prompt_ids_B, prompt_tokens_BP, prompt_mask_BP, completion_BKT, completion_mask_BKT,
             sampler_logp_BKT, rewards_BK, completions, reward_stats) -> Rollouts:
    """Concatenates prompts and completions into training sequences and counts successes."""
    B, K, T = completion_BKT.shape
    prompt_BKP = np.repeat(prompt_tokens_BP[:, None], K, axis=1)
    pmask_BKP = np.repeat(prompt_mask_BP[:, None], K, axis=1)
    tokens = np.concatenate([prompt_BKP, completion_BKT], axis=-1).astype(np.int32)
    attn = np.concatenate([pmask_BKP, completion_mask_BKT], axis=-1).astype(np.int32)
    rewards_BK = np.asarray(rewards_BK, np.float32).reshape(B, K)
    return Rollouts(
        prompt_ids_B=np.asarray(prompt_ids_B, np.int32), tokens_BKL=tokens, attn_mask_BKL=attn,
        loss_mask_BKT=completion_mask_BKT.astype(np.float32), sampler_logp_BKT=sampler_logp_BKT.astype(np.float32),
        rewards_BK=rewards_BK, successes_B=(rewards_BK >= 1.0).sum(-1).astype(np.int32),
        completions=list(completions), reward_errors=reward_stats.n_failed,
        reward_first_error=reward_stats.first_error, generated_tokens=int(completion_mask_BKT.sum()))


def score(reward_fn: Callable, completions: Sequence[str], examples: Sequence[Example], B: int, K: int):
    """Rewards [B, K] for group-major completions (prompt b's K samples are rows b*K .. b*K+K-1)."""
    rewards, stats = score_completions(reward_fn, list(completions), [examples[i // K] for i in range(B * K)])
    return np.asarray(rewards, np.float32).reshape(B, K), stats


def concat(parts: Sequence[Rollouts]) -> Rollouts:
    """Stacks several rollout batches along the prompt axis (DAPO dynamic sampling keeps groups from rounds)."""
    first = parts[0]
    out = {}
    for field in dataclasses.fields(Rollouts):
        values = [getattr(p, field.name) for p in parts]
        if isinstance(values[0], np.ndarray):
            out[field.name] = np.concatenate(values, axis=0)
        elif field.name == "completions":
            out[field.name] = [c for v in values for c in v]
        elif field.name == "reward_first_error":
            out[field.name] = next((v for v in values if v), None)
        else:
            out[field.name] = sum(values)
    del first
    return Rollouts(**out)


def take(r: Rollouts, rows: np.ndarray) -> Rollouts:
    """The groups ``rows`` of ``r`` (counters and reward-error stats kept whole)."""
    K = r.group_size
    out = {}
    for field in dataclasses.fields(Rollouts):
        v = getattr(r, field.name)
        if isinstance(v, np.ndarray):
            out[field.name] = v[rows]
        elif field.name == "completions":
            out[field.name] = [v[i * K + k] for i in rows for k in range(K)]
        else:
            out[field.name] = v
    return Rollouts(**out)
