"""Every objective x selector combination on the CPU testbed, chosen by the config string.

    python experiments/train.py --config configs/testbed.py:grpo,uniform
    python experiments/train.py --config configs/testbed.py:lpo_rev,gps
Objectives: any lpo_jax.objectives preset (grpo drgrpo rloo maxrl dapo gspo cispo rpp lpo_fwd lpo_rev lpo_js
lpo_hellinger lpo_chi2 lpo_point). Selectors: uniform ds mopps dps gps.
"""
from lpo_jax.training.config import base_config


def get_config(spec: str = "lpo_fwd,dps"):
    objective, selector = (part.strip() for part in spec.split(","))
    c = base_config()
    c.run_name = f"testbed_{objective}_{selector}"
    c.objective.name = objective
    c.selector.name = selector
    return c
