"""lpo_jax.selection: online prompt selection for RL finetuning (spec: papers/selection.md).

Every selector is a `Selector(init, select, update)` of pure, jittable functions over a state pytree
(hyperparameters closed over, optax style); see `base.py`:
    init(key) -> state
    select(state, candidates i32[M], key) -> (state, selected i32[B], predicted_success f32[M])
    update(state, selected i32[B], successes i32[B], n) -> state

    sel = make_selector("dps", num_prompts=N, batch_size=256, decay=0.7)
    state = sel.init(key)
    state, ids, pred = sel.select(state, candidates, key)
    state = sel.update(state, ids, successes, n=8)

DAPO dynamic sampling is Uniform proposals plus a filter loop the trainer drives (`dynamic_sampling`).
GPS lives in `lpo_jax.selection.gps` (`make_selector("gps", embeddings=E, ...)` imports it lazily); its
test-time allocation (and the calibration it needs) in `test_time`.
"""
import numpy as np

from lpo_jax.selection.base import Selector, SelectorState
from lpo_jax.selection.dps import DPSState, make_dps, prior_counts, transition_matrix
from lpo_jax.selection.dps_history import dps_hmm_model, filter_history, posterior_predictive_nuts
from lpo_jax.selection.dynamic_sampling import (DSRound, DynamicSamplingConfig, ds_round_add, ds_round_done,
                                                ds_round_init, ds_train_mask, dynamic_sampling_step,
                                                filter_mixed, make_dynamic_sampling)
from lpo_jax.selection.exact_bayes import exact_posterior
from lpo_jax.selection.harness import make_runner, run_selector, time_selector
from lpo_jax.selection.metrics import mixed_mask, spearman, summarize
from lpo_jax.selection.mopps import MoPPSState, make_mopps, mopps_posterior, mopps_predictive, mopps_prob_mixed
from lpo_jax.selection.simulator import (SimConfig, SimState, env_rollout, env_step, env_train, make_simulator,
                                         true_success)
from lpo_jax.selection.test_time import (LogitCalibration, allocate_test_samples, expected_solved,
                                         fit_logit_calibration, logit_normal_nodes)
from lpo_jax.selection.uniform import UniformState, make_uniform
from lpo_jax.selection.validation import validate_candidates, validate_update

SELECTORS = ("uniform", "ds", "mopps", "dps", "gps")


def make_selector(name: str, **hparams) -> Selector:
    """Build a selector by name: uniform, ds (= dynamic_sampling: its Uniform proposal selector), mopps, dps, gps.

    uniform/ds/mopps/dps take num_prompts=, batch_size= and their options; "ds" accepts and checks the DS
    options (max_num_gen_batches, filter_min, filter_max); build the loop config with
    `make_dynamic_sampling`. "gps" calls `lpo_jax.selection.gps.make_gps(embeddings, **rest)` with
    `embeddings=` f32[N, d] popped from the keyword arguments (num_prompts=, if given, must match its rows).
    """
    key = name.lower()
    if key == "uniform":
        return make_uniform(**hparams)
    if key in ("ds", "dynamic_sampling"):
        return make_dynamic_sampling(**hparams)[0]
    if key == "mopps":
        return make_mopps(**hparams)
    if key == "dps":
        return make_dps(**hparams)
    if key == "gps":
        if "embeddings" not in hparams:
            raise ValueError("make_selector('gps', ...) needs embeddings=f32[N, d] (prompt embeddings).")
        from lpo_jax.selection import gps  # lazy: GPS is optional and heavier

        embeddings = hparams.pop("embeddings")
        num_prompts = hparams.pop("num_prompts", None)  # implied by the embeddings; checked if given
        if num_prompts is not None and int(num_prompts) != np.shape(embeddings)[0]:
            raise ValueError(f"num_prompts={num_prompts} but embeddings has {np.shape(embeddings)[0]} rows.")
        return gps.make_gps(embeddings, **hparams)
    raise ValueError(f"unknown selector {name!r}; choose one of {SELECTORS}.")


__all__ = [
    "Selector", "SelectorState", "make_selector", "SELECTORS",
    "make_uniform", "UniformState",
    "make_dynamic_sampling", "DynamicSamplingConfig", "DSRound", "filter_mixed", "ds_round_init", "ds_round_add",
    "ds_round_done", "ds_train_mask", "dynamic_sampling_step",
    "make_mopps", "MoPPSState", "mopps_posterior", "mopps_predictive", "mopps_prob_mixed",
    "make_dps", "DPSState", "prior_counts", "transition_matrix", "filter_history", "dps_hmm_model",
    "posterior_predictive_nuts", "exact_posterior",
    "SimConfig", "SimState", "make_simulator", "env_step", "env_rollout", "env_train", "true_success",
    "make_runner", "run_selector", "time_selector", "mixed_mask", "spearman", "summarize",
    "allocate_test_samples", "expected_solved", "fit_logit_calibration", "logit_normal_nodes", "LogitCalibration",
    "validate_candidates", "validate_update",
]
