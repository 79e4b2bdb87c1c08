"""lpo_jax: efficient RL post-training of LLMs in JAX.

Subpackages (see DESIGN in README.md): models, sampling, tasks, objectives, selection, trace, training, eval.
"""
__version__ = "0.1.0"
