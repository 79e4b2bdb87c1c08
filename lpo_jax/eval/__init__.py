"""Evaluation: avg@k / pass@k on held-out prompts."""
from lpo_jax.eval.metrics import avg_at_k, pass_at_k

__all__ = ["avg_at_k", "pass_at_k"]
