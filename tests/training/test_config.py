"""Config validation: unknown keys and bad values fail before any compute, with a message naming the fix."""
import subprocess
import sys

import pytest

from lpo_jax.training.config import ConfigError, base_config, check_overrides, validate


def test_default_config_is_valid():
    assert validate(base_config()).objective.name == "lpo_fwd"


@pytest.mark.parametrize("key,value,match", [
    ("rollout.top_p", 1.5, "top_p"),
    ("rollout.group_size", 0, "group_size"),
    ("optim.lr", -1.0, "optim.lr"),
    ("selector.name", "bogus", "selector.name"),
    ("task.prompt_overflow", "drop", "prompt_overflow"),
    ("rollout.batch_prompts", 33, "divisible"),
])
def test_bad_values_are_rejected(key, value, match):
    c = base_config()
    section, leaf = key.split(".")
    c[section][leaf] = value
    with pytest.raises(ConfigError, match=match):
        validate(c)


def test_unknown_objective_and_field_values_are_rejected():
    c = base_config()
    c.objective.name = "ppo_nonsense"
    with pytest.raises(ConfigError, match="objective"):
        validate(c)
    c = base_config()
    c.objective.baseline = "median"
    with pytest.raises(ConfigError, match="objective"):
        validate(c)


def test_unknown_keys_are_rejected():
    c = base_config()
    c.optim.unlock()
    c.optim.learning_rate = 1e-3
    with pytest.raises(ConfigError, match="unknown config key.*optim.learning_rate"):
        validate(c)
    with pytest.raises(ConfigError, match="Did you mean optim.lr"):
        check_overrides(["--config.lr=3"])
    check_overrides(["--config.optim.lr=3", "--other=1"])


def test_hf_source_needs_a_path():
    c = base_config()
    c.model.source = "hf"
    with pytest.raises(ConfigError, match="model.path"):
        validate(c)


def test_cli_reports_bad_key_without_traceback():
    proc = subprocess.run([sys.executable, "experiments/train.py", "--config.optim.lx=3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown config key 'optim.lx'" in proc.stderr and "Traceback" not in proc.stderr
