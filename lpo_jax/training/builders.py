"""Build the pieces of a run from its config: mesh, policy + tokenizer, task data, objective, selector.

Everything here runs once at start-up, on the host; the loop then only threads pure functions over state.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from lpo_jax.tasks.base import Example


@dataclasses.dataclass
class Policy:
    model: object
    tokenizer: object
    path: str
    sft_s: float          # seconds spent on an SFT warm start in this process (0 when cached / not used)


@dataclasses.dataclass
class TaskData:
    """Prompts tokenised once: train/eval token lists plus the host-side reward function."""

    train: list[Example]
    eval: list[Example]
    reward_fn: Callable[[str, Example], float]
    train_tokens: list[list[int]]
    eval_tokens: list[list[int]]
    truncated: int
    stop_strings: tuple[str, ...] = ()


def build_mesh(cfg: ml_collections.ConfigDict):
    from lpo_jax.training.mesh import make_mesh
    return make_mesh(data=cfg.mesh.data, fsdp=cfg.mesh.fsdp, tensor=cfg.mesh.tensor)


def build_policy(cfg: ml_collections.ConfigDict, mesh) -> Policy:
    """The policy model and tokenizer: the cached testbed SFT warm start, or a local HF directory."""
    from lpo_jax.models import Tokenizer, load_hf
    sft_s = 0.0
    if cfg.model.source == "testbed":
        from lpo_jax.tasks.testbed_policy import ensure_testbed_policy
        start = time.time()
        path, trained = ensure_testbed_policy(seed=cfg.seed)
        sft_s = time.time() - start if trained else 0.0
    else:
        path = cfg.model.path
    model = load_hf(path, dtype=cfg.model.dtype, param_dtype=cfg.model.param_dtype, mesh=mesh)
    return Policy(model=model, tokenizer=Tokenizer.from_pretrained(path), path=path, sft_s=sft_s)


def build_task(cfg: ml_collections.ConfigDict, tokenizer) -> TaskData:
    """Train / held-out examples and reward function for cfg.task.name, prompts tokenised once."""
    name = cfg.task.name
    stop = ()
    if name == "testbed":
        from lpo_jax.tasks.testbed import TestbedTaskConfig, generate_splits, testbed_reward
        tcfg = TestbedTaskConfig(**({"n_train": cfg.task.num_train} if cfg.task.num_train else {}),
                                 **({"n_heldout": cfg.task.num_eval} if cfg.task.num_eval else {}))
        train, held = generate_splits(tcfg)
        reward_fn = testbed_reward
    else:
        from lpo_jax.tasks import get_reward_fn
        from lpo_jax.tasks.datasets import DatasetConfig, load_examples
        common = dict(task={"jsonl": "generic"}.get(name, name), prompt_field=cfg.task.prompt_field or None,
                      answer_field=cfg.task.answer_field or None)
        train = load_examples(DatasetConfig(source=cfg.task.train_path, limit=cfg.task.num_train or None, **common))
        held = load_examples(DatasetConfig(source=cfg.task.eval_path or cfg.task.train_path, split="test",
                                           limit=cfg.task.num_eval or None, **common))
        reward_fn = get_reward_fn("exact_match" if name == "jsonl" else name)
        stop = ("</answer>",)
    from lpo_jax.tasks.prompts import tokenize_prompts
    encode = functools.partial(tokenize_prompts, tokenizer, max_prompt_len=cfg.task.max_prompt_len,
                               overflow=cfg.task.prompt_overflow)
    train_tokens, eval_tokens = encode(train), encode(held)
    return TaskData(train=train, eval=held, reward_fn=reward_fn, train_tokens=train_tokens.ids,
                    eval_tokens=eval_tokens.ids, truncated=train_tokens.n_truncated + eval_tokens.n_truncated,
                    stop_strings=stop)


def build_selector(cfg: ml_collections.ConfigDict, task: TaskData):
    """The prompt selector over the training pool (DAPO dynamic sampling proposes prompts uniformly)."""
    from lpo_jax.selection import make_selector
    name, n, b = cfg.selector.name, len(task.train), cfg.rollout.batch_prompts
    if b > n:
        raise ValueError(f"config.rollout.batch_prompts={b} exceeds the {n} training prompts")
    if name in ("uniform", "ds"):
        return make_selector("uniform", num_prompts=n, batch_size=b)
    if name == "mopps":
        return make_selector("mopps", num_prompts=n, batch_size=b, decay=cfg.selector.decay)
    if name == "dps":
        return make_selector("dps", num_prompts=n, batch_size=b, decay=cfg.selector.decay)
    from lpo_jax.selection.embeddings import embed_texts, get_embedder
    embeddings = embed_texts([ex.prompt for ex in task.train], get_embedder(cfg.selector.embedder),
                             cache_dir=os.path.expanduser("~/.cache/lpo_jax/embeddings"))
    return make_selector("gps", embeddings=np.asarray(embeddings, np.float32), batch_size=b,
                         n_rollouts=cfg.rollout.group_size, memory=bool(cfg.selector.gps_memory),
                         memory_decay=cfg.selector.decay)


def rl_key(seed: int, rl_step: int, stream: int) -> jax.Array:
    """The PRNG key of one random stream at one RL step: a pure function of (seed, step), so resume is exact."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), rl_step), stream)
