"""Evaluation: avg@k / pass@k on held-out prompts."""
from lpo_jax.eval.evaluate import decode_completions, evaluate
from lpo_jax.eval.metrics import avg_at_k, pass_at_k

__all__ = ["avg_at_k", "decode_completions", "evaluate", "pass_at_k"]
