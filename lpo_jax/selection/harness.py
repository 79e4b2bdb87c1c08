"""Run any Selector (optionally wrapped in DAPO dynamic sampling) on the simulator under `lax.scan`.

Per step: (held-out probe) -> select on the training pool -> rollouts -> update -> train the environment
on the trained prompts. Logged per step (spec §1):
  trained / effective (mixed groups among trained) / rollouts (every rollout spent, DS discards included),
  spearman (pred vs realised c/n on the selected batch), spearman_true (pred vs true gamma over candidates),
  heldout_spearman (pred vs true gamma on held-out prompts, from `select` called on the held-out ids with the
  current state, state discarded; NaN for per-prompt methods whose held-out predictions are all equal),
  oracle_heldout_spearman (the best any embedding-based predictor could do; a ceiling for reference).
`selector_ms` times select + update (jitted, post warm-up, block_until_ready) separately from the scan.
"""
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.selection.base import Selector
from lpo_jax.selection.dynamic_sampling import DynamicSamplingConfig, ds_train_mask, dynamic_sampling_step
from lpo_jax.selection.metrics import mixed_mask, spearman
from lpo_jax.selection.simulator import env_rollout, env_train, oracle_embedding_logit, true_success


def make_runner(selector: Selector, *, num_steps: int, batch_size: int, n: int = 8,
                dynamic_sampling: Optional[DynamicSamplingConfig] = None, probe_heldout: bool = True,
                compiler_options: Optional[dict] = None):
    """A jitted `run(sim, key) -> (per-step metrics, final selector state, final sim)`; reuse it across seeds.

    compiler_options go to `jax.jit` (e.g. {"xla_backend_optimization_level": 0} halves compile time in tests).
    """
    B = int(batch_size)

    def step(carry, _):
        state, sim, k, pos_of_id = carry
        cand = sim.train_ids
        k, k_sel, k_roll, k_probe = jax.random.split(k, 4)
        gamma = true_success(sim)
        out = {}
        if probe_heldout and sim.heldout_ids.shape[0] >= B:
            _, _, pred_h = selector.select(state, sim.heldout_ids, k_probe)
            out["heldout_spearman"] = spearman(pred_h, gamma[sim.heldout_ids])
            oracle = oracle_embedding_logit(sim)
            out["oracle_heldout_spearman"] = spearman(oracle[sim.heldout_ids], gamma[sim.heldout_ids])
        if dynamic_sampling is None:
            state, ids, pred_m = selector.select(state, cand, k_sel)
            successes = env_rollout(sim, ids, k_roll, n)
            state = selector.update(state, ids, successes, n)
            trained = jnp.ones((B,), bool)
            rollouts = jnp.int32(B * n)
        else:
            rollout_fn = lambda ids, kk: env_rollout(sim, ids, kk, n)  # noqa: E731
            state, rnd, pred_m = dynamic_sampling_step(selector, state, cand, k_sel, rollout_fn, n,
                                                       dynamic_sampling, B)
            ids, successes, trained = rnd.kept_ids, rnd.kept_successes, ds_train_mask(rnd)
            rollouts = rnd.num_rollouts
            out["gen_batches"] = rnd.num_gen_batches
        out["trained"] = trained.sum()
        out["effective"] = (mixed_mask(successes, n) & trained).sum()
        out["rollouts"] = rollouts
        out["spearman"] = spearman(pred_m[pos_of_id[ids]], successes / n, trained)
        out["spearman_true"] = spearman(pred_m, gamma[cand])
        out["mean_gamma"] = gamma[cand].mean()
        return (state, env_train(sim, ids, trained), k, pos_of_id), out

    def run(sim, key):
        cand = sim.train_ids
        pos_of_id = jnp.zeros((sim.embeddings_ND.shape[0],), jnp.int32).at[cand].set(
            jnp.arange(cand.shape[0], dtype=jnp.int32))
        k_init, k_run = jax.random.split(key)
        init = (selector.init(k_init), sim, k_run, pos_of_id)
        carry, per_step = jax.lax.scan(step, init, None, length=num_steps)
        return per_step, carry[0], carry[1]

    return jax.jit(run, compiler_options=compiler_options)


def run_selector(selector: Selector, sim, key, *, num_steps: int, batch_size: int, n: int = 8,
                 dynamic_sampling: Optional[DynamicSamplingConfig] = None, probe_heldout: bool = True,
                 compiler_options: Optional[dict] = None):
    """Simulate `num_steps` RL steps once. Returns (per-step metrics as numpy arrays, final selector state, sim)."""
    run = make_runner(selector, num_steps=num_steps, batch_size=batch_size, n=n, dynamic_sampling=dynamic_sampling,
                      probe_heldout=probe_heldout, compiler_options=compiler_options)
    per_step, state, sim = run(sim, key)
    return jax.tree.map(np.asarray, per_step), state, sim


def time_selector(selector: Selector, state, candidates, key, *, batch_size: int, n: int = 8, reps: int = 20):
    """Median and min wall ms of one select + update (each jitted; post warm-up; block_until_ready)."""
    select = jax.jit(selector.select)
    update = jax.jit(selector.update, static_argnums=3)
    successes = jax.random.randint(jax.random.fold_in(key, 7), (batch_size,), 0, n + 1)
    times = []
    for r in range(reps + 2):
        k = jax.random.fold_in(key, r)
        t0 = time.perf_counter()
        st, ids, pred = select(state, candidates, k)
        st = update(st, ids, successes, n)
        jax.block_until_ready(st)
        if r >= 2:  # first calls compile
            times.append((time.perf_counter() - t0) * 1e3)
        state = st
    return float(np.median(times)), float(np.min(times))
