"""The SFT warm start on a small setting (same mechanism as the default, fewer prompts / steps):
spread of per-prompt success, cache reuse, and the saved Hugging Face directory."""
import dataclasses
import json
import os
import sys
import time

import numpy as np
import pytest

from lpo_jax.tasks import testbed
from lpo_jax.tasks import testbed_policy as tp

SMALL = tp.TestbedPolicyConfig(
    task=testbed.TestbedTaskConfig(levels=(3, 4, 5), ops=("sort",), n_train=128, n_heldout=64),
    hidden_size=64, intermediate_size=128, steps=150, batch_size=32, learning_rate=1e-2,
    spread_prompts=64, spread_samples=8,
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("sft_cache"))
    path, trained = tp.ensure_testbed_policy(SMALL, cache_dir=cache)
    return cache, path, trained


def test_spread_fraction_is_strict():
    assert tp.spread_fraction(np.array([0.0, 0.1, 0.11, 0.5, 0.89, 0.9, 1.0])) == pytest.approx(3 / 7)


def test_warm_start_spreads_success_over_the_unit_interval(policy):
    _, path, trained = policy
    report = tp.read_report(path)
    assert trained
    assert report["spread"] >= 0.3, report            # the testbed's requirement
    assert report["spread_prompts"] == 64 and report["spread_samples"] == 8
    assert 0.1 < report["train_accuracy"] < 0.9
    by_repeats = report["train_success_by_repeats"]   # the slip mechanism: repeated digits are harder
    assert by_repeats["0"] > max(v for k, v in by_repeats.items() if k != "0")
    assert report["final_loss"] < 1.0                 # it learned the task format (random init: ~4.2)


def test_cache_is_reused_and_keyed_by_settings(policy):
    cache, path, _ = policy
    start = time.time()
    again, trained = tp.ensure_testbed_policy(SMALL, cache_dir=cache)
    assert (again, trained) == (path, False) and time.time() - start < 5
    assert os.path.isabs(path) and os.path.basename(path) == SMALL.cache_key()
    assert SMALL.replace(seed=1).cache_key() != SMALL.cache_key()
    assert dataclasses.replace(SMALL, task=dataclasses.replace(SMALL.task, levels=(3, 4))).cache_key() != \
        SMALL.cache_key()
    assert not [p for p in os.listdir(cache) if ".tmp-" in p]


def test_saved_directory_is_a_loadable_hf_checkpoint(policy):
    from transformers import AutoTokenizer

    from lpo_jax.models import load_hf
    from lpo_jax.tasks.char_tokenizer import EOS_ID

    _, path, _ = policy
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert tok.eos_token_id == EOS_ID and len(tok) == 64
    model = load_hf(path)
    assert model.cfg == tp.testbed_model_config(SMALL)
    _, heldout = testbed.generate_splits(SMALL.task)
    greedy = tp.measure_success(model, heldout, samples=1, temperature=0.0, seed=0,
                                max_new_tokens=SMALL.task.max_answer_chars + 1)
    assert greedy.mean() == pytest.approx(tp.read_report(path)["heldout_greedy_accuracy"])


def test_sft_script_prints_one_json_line_from_the_cache(policy, capsys):
    cache, path, _ = policy
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
    import sft

    line = sft.main(["--cache-dir", cache, "--levels", "3,4,5", "--ops", "sort", "--n-train", "128",
                     "--n-heldout", "64", "--hidden-size", "64", "--intermediate-size", "128", "--steps", "150",
                     "--batch-size", "32", "--learning-rate", "0.01", "--spread-prompts", "64",
                     "--spread-samples", "8", "--quiet"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == line and line["path"] == path and line["cached"] is True
    assert line["spread"] == tp.read_report(path)["spread"]


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="slip_prob"):
        tp.TestbedPolicyConfig(slip_prob=1.0)
    with pytest.raises(ValueError, match="unknown testbed policy settings"):
        tp.ensure_testbed_policy({"stepz": 3})
