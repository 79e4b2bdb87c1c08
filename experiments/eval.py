"""Evaluate a saved policy (a Hugging Face directory, e.g. a run's hf_export/) on held-out prompts.

    python experiments/eval.py --model runs/default/hf_export                     # testbed held-out set
    python experiments/eval.py --model /ckpt/dir --config configs/countdown_qwen3_4b.py:lpo_fwd,dps --k 8

Task, prompt length and sampling settings come from the config (default: configs/default.py); prints one JSON
line with avg@k and pass@k.
"""
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(_ROOT, "configs", "default.py"), "config file")
_MODEL = flags.DEFINE_string("model", None, "Hugging Face model directory to evaluate", required=True)
_K = flags.DEFINE_integer("k", 0, "samples per prompt (0 = config.eval.num_samples)")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the console to the progress bar and the result
    import jax
    from lpo_jax.eval import evaluate
    from lpo_jax.models import Tokenizer, load_hf
    from lpo_jax.sampling.sampler import Sampler
    from lpo_jax.training import builders
    from lpo_jax.training.config import validate
    from lpo_jax.training.loop import _sampling_config

    cfg = validate(_CONFIG.value)
    if not os.path.isdir(_MODEL.value):
        sys.exit(f"--model {_MODEL.value!r} is not a directory; pass a Hugging Face model directory")
    model = load_hf(_MODEL.value, dtype=cfg.model.dtype)
    tok = Tokenizer.from_pretrained(_MODEL.value)
    task = builders.build_task(cfg, tok)
    k = _K.value or cfg.eval.num_samples
    scfg = _sampling_config(cfg, tok, task, temperature=cfg.eval.temperature,
                            max_new_tokens=cfg.rollout.max_new_tokens)
    result = evaluate(Sampler(model), tok, task.eval, task.eval_tokens, task.reward_fn, scfg, k,
                      jax.random.PRNGKey(_SEED.value), stop_strings=task.stop_strings)
    print(json.dumps({"model": os.path.abspath(_MODEL.value), "prompts": len(task.eval), "k": k, **result}))


if __name__ == "__main__":
    app.run(main)
