"""End-to-end RL loop on a tiny random policy: every objective/selector runs, resume is exact, faults are handled.

The policy is a tiny random Qwen3-style model saved as a real HF directory with the testbed's char tokenizer, so
the loop goes through load_hf / Tokenizer / Sampler / objectives / selectors / orbax exactly as a real run does.
"""
import json
import math
import os

import jax
import numpy as np
import pytest

from lpo_jax.training import checkpoint, loop
from lpo_jax.training.config import base_config, validate


def tiny_config(policy_dir, out_dir, **overrides):
    c = base_config()
    c.output_dir = str(out_dir)
    c.model.source = "hf"
    c.model.path = policy_dir
    c.task.num_train = 48
    c.task.num_eval = 8
    c.task.max_prompt_len = 16
    c.rollout.batch_prompts = 8
    c.rollout.group_size = 4
    c.rollout.max_new_tokens = 6
    c.steps = 2
    c.eval.every = 0
    c.eval.num_samples = 2
    c.checkpoint.every = 1
    c.checkpoint.export_hf = False
    c.log.progress = False
    c.log.tensorboard = False
    c.optim.lr = 1e-2
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return validate(c)


def _params_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("objective,selector", [
    ("lpo_fwd", "dps"), ("lpo_rev", "uniform"), ("grpo", "mopps"), ("drgrpo", "ds"), ("dapo", "uniform"),
    ("gspo", "uniform"), ("cispo", "uniform"), ("rloo", "uniform"), ("maxrl", "uniform"), ("rpp", "uniform"),
    ("lpo_js", "uniform"), ("lpo_hellinger", "uniform"), ("lpo_chi2", "uniform"), ("lpo_point", "uniform"),
    ("lpo_fwd", "gps"), ("grpo", "gps+memory"),
])
def test_every_objective_and_selector_runs(tiny_policy_dir, tmp_path, objective, selector):
    name, _, memory = selector.partition("+")
    cfg = tiny_config(tiny_policy_dir, tmp_path, steps=1, **{"objective.name": objective,
                                                              "selector.name": name,
                                                              "selector.gps_memory": bool(memory),
                                                              "run_name": f"{objective}_{name}{memory}"})
    result = loop.run(cfg)
    s = result.summary
    assert s["steps"] == 1
    per_step = 8 * 4
    assert s["rollouts"] >= per_step if selector == "ds" else s["rollouts"] == per_step
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, cfg.run_name, "metrics.jsonl"))]
    trained = [r for r in rows if "loss" in r]
    assert len(trained) == 1 and all(math.isfinite(r["loss"]) for r in trained)
    assert os.path.isfile(s["curves"])
    assert 0.0 <= s["final_accuracy"] <= 1.0


def test_resume_is_bit_exact(tiny_policy_dir, tmp_path):
    full = loop.run(tiny_config(tiny_policy_dir, tmp_path / "full", steps=4, run_name="r"))
    loop.run(tiny_config(tiny_policy_dir, tmp_path / "split", steps=2, run_name="r"))
    resumed = loop.run(tiny_config(tiny_policy_dir, tmp_path / "split", steps=4, run_name="r"))
    assert resumed.summary["steps"] == 4 and resumed.summary["rollouts"] == full.summary["rollouts"]
    assert _params_equal(full.state.params, resumed.state.params)
    assert _params_equal(full.state.opt_state, resumed.state.opt_state)
    assert _params_equal(full.selector_state, resumed.selector_state)
    rows = lambda d: [json.loads(l) for l in open(os.path.join(d, "r", "metrics.jsonl"))]
    # training rows must match exactly (the stopped run also logged its final evaluation at step 2)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "step_s")} for r in rs
                        if "loss" in r]
    assert strip(rows(tmp_path / "full")) == strip(rows(tmp_path / "split"))


def test_raising_and_nan_rewards_count_as_zero(tiny_policy_dir, tmp_path, monkeypatch):
    from lpo_jax.tasks import testbed
    calls = {"n": 0}

    def flaky(completion, example):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise RuntimeError("grader crashed")
        return float("nan") if calls["n"] % 3 == 1 else 1.0

    monkeypatch.setattr(testbed, "testbed_reward", flaky)
    s = loop.run(tiny_config(tiny_policy_dir, tmp_path, steps=1)).summary
    assert s["steps"] == 1 and s["reward_errors"] > 0


def test_nonfinite_updates_are_skipped_then_stop_with_checkpoint_intact(tiny_policy_dir, tmp_path):
    loop.run(tiny_config(tiny_policy_dir, tmp_path, steps=1, run_name="nan"))
    bad = tiny_config(tiny_policy_dir, tmp_path, steps=3, run_name="nan",
                      **{"optim.lr": float("inf"), "train.max_nonfinite": 2})
    with pytest.raises(loop.TrainingError, match="non-finite"):
        loop.run(bad)
    with checkpoint.open_manager(os.path.join(tmp_path, "nan", "checkpoints")) as mngr:
        assert mngr.latest_step() == 1


def test_train_cli_on_a_jsonl_dataset_writes_metrics_curves_checkpoint(tiny_policy_dir, tmp_path):
    """experiments/train.py end to end on a local jsonl task: last line is the run's JSON summary."""
    import subprocess
    import sys
    data = tmp_path / "data.jsonl"
    with open(data, "w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": f"s:{i % 10}{(i * 7) % 10}=", "answer": "7"}) + "\n")
    args = ["--config.model.source=hf", f"--config.model.path={tiny_policy_dir}", "--config.task.name=jsonl",
            f"--config.task.train_path={data}", "--config.task.max_prompt_len=16", "--config.steps=1",
            "--config.rollout.batch_prompts=8", "--config.rollout.group_size=4",
            "--config.rollout.max_new_tokens=6", "--config.eval.num_samples=2", "--config.eval.every=0",
            "--config.log.progress=False", f"--config.output_dir={tmp_path / 'runs'}", "--config.run_name=cli",
            "--config.selector.name=uniform"]
    proc = subprocess.run([sys.executable, "experiments/train.py", *args], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["run"] == "cli" and summary["steps"] == 1 and summary["rollouts"] == 32
    run_dir = tmp_path / "runs" / "cli"
    assert os.path.isfile(summary["curves"]) and os.path.isabs(summary["checkpoint"])
    assert (run_dir / "metrics.jsonl").read_text().count("\n") >= 2
    assert (run_dir / "tensorboard").is_dir()
    with checkpoint.open_manager(summary["checkpoint"]) as mngr:
        assert mngr.latest_step() == 1
    assert os.path.isfile(os.path.join(summary["hf_export"], "config.json"))

    # experiments/eval.py on the run's checkpoint reproduces the final held-out figure the run logged
    ev = subprocess.run([sys.executable, "experiments/eval.py", f"--run={run_dir}"], capture_output=True,
                        text=True, timeout=900)
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    assert result["step"] == 1 and result["k"] == 2
    assert result["eval_accuracy"] == summary["final_accuracy"]
    assert 0.0 <= result["eval_accuracy"] <= result["eval_pass@2"] <= 1.0
    task_args = [a for a in args if a.startswith(("--config.task.", "--config.rollout.max_new_tokens"))]
    hf = subprocess.run([sys.executable, "experiments/eval.py", f"--model={summary['hf_export']}", "--k=3",
                         *task_args], capture_output=True, text=True, timeout=900)
    assert hf.returncode == 0, hf.stderr[-3000:]
    hf_result = json.loads(hf.stdout.strip().splitlines()[-1])
    assert hf_result["k"] == 3 and hf_result["prompts"] == result["prompts"]
    assert 0.0 <= hf_result["eval_accuracy"] <= hf_result["eval_pass@3"] <= 1.0
    missing = subprocess.run([sys.executable, "experiments/eval.py", f"--run={tmp_path / 'nowhere'}"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "checkpoints/" in missing.stderr
