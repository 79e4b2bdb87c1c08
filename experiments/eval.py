"""Evaluate a saved policy on held-out prompts; prints one JSON line with avg@k and pass@k.

    python experiments/eval.py --run runs/default                   # a run's latest orbax checkpoint
    python experiments/eval.py --run runs/default --step 20 --k 8   # a given step, k samples per prompt
    python experiments/eval.py --model runs/default/hf_export       # a Hugging Face directory
    python experiments/eval.py --model /ckpt/dir --config configs/countdown_qwen3_4b.py:lpo_fwd,dps --k 8

With --run, task and sampling settings come from the config saved in the checkpoint and the evaluation key is
the run's own, so the figure reproduces the one logged at that step. With --model they come from --config
(default: configs/default.py).
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
_MODEL = flags.DEFINE_string("model", None, "Hugging Face model directory to evaluate")
_RUN = flags.DEFINE_string("run", None, "training run directory (output_dir/run_name) whose checkpoint to evaluate")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step with --run (default: the latest)")
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

    if bool(_MODEL.value) == bool(_RUN.value):
        sys.exit("pass exactly one of --model (a Hugging Face directory) or --run (a training run directory)")
    if _RUN.value:
        from lpo_jax.training.checkpoint import CheckpointError
        from lpo_jax.training.loop import evaluate_checkpoint
        try:
            print(json.dumps(evaluate_checkpoint(_RUN.value, _STEP.value, _K.value)))
        except CheckpointError as err:
            sys.exit(f"checkpoint error: {err}")
        return
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
