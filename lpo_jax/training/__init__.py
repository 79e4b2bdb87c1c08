"""lpo_jax.training."""
