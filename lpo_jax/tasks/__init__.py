"""lpo_jax.tasks."""
