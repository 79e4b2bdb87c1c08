"""Main entry: RL post-training from a config file.

    python experiments/train.py                                   # configs/default.py: CPU testbed, LPO-fwd + DPS
    python experiments/train.py --config configs/testbed.py:grpo,uniform --config.steps=40
    python experiments/train.py --config configs/countdown_qwen3_4b.py:lpo_fwd,dps --config.model.path=/ckpt/...

The run ends by printing one JSON line (accuracies, steps, rollouts, wall time, checkpoint and curve paths).
"""
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, _ROOT)

from absl import app, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from lpo_jax.training.config import ConfigError, check_overrides, validate  # noqa: E402

if __name__ == "__main__":  # unknown --config.* keys: a clear message instead of absl's traceback
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        sys.exit(f"config error: {err}")

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "default.py"), "experiment config file (configs/*.py)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the console to the progress bar and the result
    try:
        cfg = validate(_CONFIG.value)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
    from lpo_jax.training.loop import train
    print(json.dumps(train(cfg)), flush=True)


if __name__ == "__main__":
    app.run(main)
