"""lpo_jax.tasks: verifiable tasks, reward functions, datasets and the CPU testbed.

Reward contract (every task): ``reward_fn(completion: str, example: Example) -> float`` (host-side);
batch scoring with fault counting: ``score_completions(reward_fn, completions, examples)``.

    from lpo_jax.tasks import Example, score_completions, countdown_reward, math_reward
    from lpo_jax.tasks import TestbedTaskConfig, generate_splits, testbed_reward, ensure_testbed_policy

Modules: base (Example, scoring), countdown, math_task (math-verify), datasets (jsonl/parquet/HF),
prompts (tokenization with a length policy), testbed (digit sorting task family), char_tokenizer,
testbed_policy (SFT warm start, cached; imports JAX lazily).
"""
from lpo_jax.tasks.base import Example, RewardFn, ScoreStats, exact_match_reward, score_completions
from lpo_jax.tasks.countdown import (check_equation, countdown_examples, countdown_prompt, countdown_reward,
                                     generate_countdown_records)
from lpo_jax.tasks.datasets import DatasetConfig, load_examples, load_records, records_to_examples
from lpo_jax.tasks.math_task import extract_boxed, extract_math_answer, math_reward
from lpo_jax.tasks.prompts import PromptTokens, tokenize_prompts
from lpo_jax.tasks.testbed import TestbedTaskConfig, generate_splits, testbed_reward

REWARD_FNS = {
    "countdown": countdown_reward,
    "math": math_reward,
    "testbed": testbed_reward,
    "exact_match": exact_match_reward,
}


def get_reward_fn(name: str) -> RewardFn:
    """The reward function registered under `name` (see REWARD_FNS)."""
    if name not in REWARD_FNS:
        raise ValueError(f"unknown reward function {name!r}; available: {sorted(REWARD_FNS)}")
    return REWARD_FNS[name]


def ensure_testbed_policy(*args, **kwargs):
    """See lpo_jax.tasks.testbed_policy.ensure_testbed_policy (lazy: importing it pulls in JAX)."""
    from lpo_jax.tasks.testbed_policy import ensure_testbed_policy as _ensure

    return _ensure(*args, **kwargs)


__all__ = [
    "DatasetConfig", "Example", "PromptTokens", "REWARD_FNS", "RewardFn", "ScoreStats", "TestbedTaskConfig",
    "check_equation", "countdown_examples", "countdown_prompt", "countdown_reward", "ensure_testbed_policy",
    "exact_match_reward", "extract_boxed", "extract_math_answer", "generate_countdown_records",
    "generate_splits", "get_reward_fn", "load_examples", "load_records", "math_reward", "records_to_examples",
    "score_completions", "testbed_reward", "tokenize_prompts",
]
