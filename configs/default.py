"""Default run: the CPU testbed, LPO-fwd (GRPO temperature) + DPS prompt selection.

    python experiments/train.py                                  # this config
    python experiments/train.py --config.steps=100 --config.optim.lr=3e-4
"""
from lpo_jax.training.config import base_config


def get_config():
    return base_config()
