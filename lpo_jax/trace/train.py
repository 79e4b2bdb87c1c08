"""The TRACE RL loop (trees on the agent loop + the trainer's jitted step), with its baselines.

Per RL step (spec §2.1 driver; `TraceTrainConfig` for the methods):
  1. a random pool of `pool_prompts` training questions; stage 1: ``trace`` scores them with the shared
     predictor (pooled policy hidden state of the prompt; one value per ensemble member) and allocates
     `root_budget` roots (`allocation.allocate_roots`; `allocate_roots_dp` for root_objective="trajectories";
     both maximise the members' mean objective); the baselines draw random questions with fixed group sizes;
  2. `tree.rollout_tree`: roots, then (trees) continuations chosen by flip probability from the predictor's
     prefix values (``trace``) or uniformly (``tree_random``); none for ``grpo_flat``;
  3. targets: tree advantages on tokens or LPO on leaf groups (`trace.batch.make_batch`);
  4. the policy update: `training.step.make_train_step`, jitted once per shape and donated;
  5. the predictor: features of every real node of this step's trees (from the pre-update policy), targets
     (`targets.predictor_targets` over `targets.node_values` in mode ``predictor_target``: "direct" by
     default, i.e. only the samples drawn from each node's own prefix, unbiased under TRACE's
     outcome-dependent branching; "leaves" / "children" = the spec's subtree means), pushed to its replay
     ring and trained (`predictor.predictor_step`, prompt rows balanced to ``predictor_prompt_share`` of
     each minibatch) before the next allocation;
  6. metrics: effective contrast ratio, nonzero-advantage token fraction, mixed-subtree rate, the predictor's
     MSE on this step's nodes *before* training on them, cost counters (trajectories, generated tokens, tool
     calls; cumulative); periodic held-out accuracy. Every evaluation of a seed uses the same PRNG key and
     env noise (common random numbers across methods and steps), so differences come from the policy.

`TraceTrainer` holds everything compiled (sampler programs, feature pass, train steps, predictor) and can
run several methods / seeds in one process (`run` starts each from the initial policy), so a comparison
pays for compilation once. Static shapes: train batch [active_rows, L, S]; features [rows, T]; trace
counts are in `TraceTrainer.trace_counts` (sampler programs may still compile a new batch bucket when a
step's number of continuations first falls into it).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.sampling import AgentConfig, Buckets, Sampler, run_episodes
from lpo_jax.trace import allocation
from lpo_jax.trace.batch import make_batch, make_loss_fn
from lpo_jax.trace.features import feature_dim, make_prefix_hidden, prefix_features, prompt_records
from lpo_jax.trace.metrics import effective_contrast_ratio, mixed_subtree_rate
from lpo_jax.trace.predictor import (PredictorConfig, predict, predict_members, predictor_init, predictor_step,
                                     weighted_mse)
from lpo_jax.trace.targets import node_values, predictor_targets
from lpo_jax.trace.train_config import TraceTrainConfig
from lpo_jax.trace.tree import TreeConfig, rollout_tree
from lpo_jax.training.state import init_train_state, make_optimizer, split_model
from lpo_jax.training.step import make_train_step

EXPANSION = {"trace": "trace", "tree_random": "random", "grpo_flat": "none"}
_predict = jax.jit(predict, static_argnums=0)
_predict_members = jax.jit(predict_members, static_argnums=0)
_allocate_roots = jax.jit(allocation.allocate_roots, static_argnums=(1, 2))
_allocate_roots_dp = jax.jit(allocation.allocate_roots_dp, static_argnums=(1, 2), static_argnames=("unit", "objective"))
_allocate_uniform = jax.jit(allocation.allocate_roots_uniform, static_argnums=(2, 3))


@functools.partial(jax.jit, static_argnames="mode")
def _node_rows(leaves, mode="direct"):
    """Predictor targets / weights per (leaf, s) [B*L*T]: prompt rows on leaf 0 at s = 0, owned nodes after
    (`targets.node_values` mode: "direct" or the spec's subtree means "leaves" / "children")."""
    B, L = leaves.shape
    T = leaves.max_turns
    tg = predictor_targets(leaves, node_values(leaves, mode))
    s0 = (jnp.arange(L)[None, :, None] == 0) & (jnp.arange(T)[None, None, :] == 0)
    y = jnp.where(s0, tg.target_P[:, None, None], tg.target_PLT)
    w = jnp.where(s0, tg.weight_P[:, None, None], tg.weight_PLT)
    return y.reshape(-1), w.reshape(-1)


@jax.jit
def _tree_metrics(leaves, K_PMT):
    binary = leaves.replace(reward_PL=(leaves.reward_PL >= 1.0).astype(jnp.float32))
    valid = leaves.leaf_valid_PL
    return {"contrast_ratio": effective_contrast_ratio(binary), "mixed_subtree_rate": mixed_subtree_rate(binary, K_PMT),
            "reward_mean": jnp.where(valid, leaves.reward_PL, 0.0).sum() / jnp.maximum(valid.sum(), 1)}
_POOL, _ALLOC, _ROLL, _PRED, _EVAL = range(5)


@dataclasses.dataclass
class RunOutput:
    summary: dict
    history: list
    evals: list
    params: object
    predictor: object


def default_buckets() -> Buckets:
    return Buckets(batch=(8, 16, 32, 64, 128, 256, 512, 1024), length=(16, 32, 64, 128, 256, 512, 1024, 2048))


class TraceTrainer:
    """Compiled pieces shared by runs: policy (initial params), sampler, feature pass, train steps."""

    def __init__(self, model, tokenizer, make_env: Callable[[int], Callable[[], object]], train_prompts: Sequence[str],
                 heldout_prompts: Sequence[str], agent_cfg: AgentConfig, *, buckets: Buckets | None = None,
                 compiler_options: dict | None = None):
        """make_env(seed) -> a make_env() factory for the agent loop (fresh env each call). compiler_options go
        to every jit (e.g. {"xla_backend_optimization_level": 0}: faster CPU compiles for tests)."""
        if not train_prompts or not heldout_prompts:
            raise ValueError("TraceTrainer needs non-empty train_prompts and heldout_prompts")
        self.graphdef, self.init_params = split_model(model)
        self.tok, self.make_env, self.agent_cfg = tokenizer, make_env, agent_cfg
        self.train_prompts, self.heldout_prompts = list(train_prompts), list(heldout_prompts)
        self.compiler_options = dict(compiler_options or {})
        self.sampler = Sampler((self.graphdef, self.init_params), buckets=buckets or default_buckets(),
                               compiler_options=self.compiler_options)
        self.trace_counts: collections.Counter = collections.Counter()
        self.prefix_hidden = make_prefix_hidden(self.graphdef, self.trace_counts, self.compiler_options)
        self.hidden_size = int(model.cfg.hidden_size)
        self._steps: dict = {}
        self.pad_id = agent_cfg.sampling.pad_id

    # ------------------------------------------------------------------ compiled pieces
    def _train_step(self, cfg: TraceTrainConfig):
        loss_kind = "lpo" if cfg.advantage_used == "lpo" else "pg"   # tree advantages share one token PG loss
        key = (loss_kind, cfg.lr, cfg.grad_clip, cfg.clip_eps, cfg.loss_agg, cfg.lpo_divergence,
               cfg.mini_batches)
        if key not in self._steps:
            loss_fn, lpo_cfg = make_loss_fn(loss_kind, clip_eps=cfg.clip_eps, loss_agg=cfg.loss_agg,
                                            lpo_divergence=cfg.lpo_divergence, counter=self.trace_counts)
            opt = make_optimizer(lr=cfg.lr, grad_clip=cfg.grad_clip)
            step = make_train_step(self.graphdef, loss_fn, opt, prompt_len=1, micro_batches=cfg.mini_batches,
                                   with_entropy=False, token_weighted=cfg.loss_agg == "token-mean")
            jitted = jax.jit(step, donate_argnums=0, **({"compiler_options": self.compiler_options}
                                                        if self.compiler_options else {}))
            self._steps[key] = (jitted, opt, lpo_cfg)
        return self._steps[key]

    def predictor_config(self, cfg: TraceTrainConfig) -> PredictorConfig:
        return PredictorConfig(feature_dim=feature_dim(self.hidden_size, cfg.predictor_features),
                               hidden=cfg.predictor_hidden,
                               max_turns=self.agent_cfg.max_turns, lr=cfg.predictor_lr, n_updates=cfg.predictor_updates,
                               batch_size=cfg.predictor_batch, buffer_size=cfg.predictor_buffer,
                               n_warm=cfg.predictor_warm, prompt_share=cfg.predictor_prompt_share,
                               ensemble=cfg.predictor_ensemble)

    # ------------------------------------------------------------------ pieces of a step
    def _mode(self, pcfg) -> str:
        return "mean" if pcfg.feature_dim == self.hidden_size else "mean_last_len"

    def root_values(self, params, pcfg, pstate, prompts):
        """Stage-1 values of `prompts` per predictor ensemble member, [E, P] (mean over axis 0: Ṽψ)."""
        recs = prompt_records(self.tok, prompts)
        x, _ = prefix_features(self.prefix_hidden, params, recs, len(recs), self.agent_cfg.max_len, 1, self.pad_id,
                               self._mode(pcfg))
        return np.asarray(_predict_members(pcfg, pstate, x))

    def prefix_value_fn(self, params, pcfg, pstate):
        T, S = self.agent_cfg.max_turns, self.agent_cfg.max_len

        def fn(grid, max_turns):
            P, M = len(grid), len(grid[0])
            flat = [r for row in grid for r in row]
            x, exists = prefix_features(self.prefix_hidden, params, flat, P * M, S, T, self.pad_id, self._mode(pcfg))
            v = np.asarray(_predict(pcfg, pstate, x)).reshape(P, M, T)
            return np.where(np.asarray(exists).reshape(P, M, T), v, 0.5)

        return fn

    def allocate(self, cfg: TraceTrainConfig, v, key):
        """Roots per pool prompt [P] for `cfg.method`; v: `root_values` ([E, P] or [P])."""
        valid = jnp.ones((cfg.pool_prompts,), bool)
        if cfg.method == "trace" and cfg.root_objective == "groups":
            return np.asarray(_allocate_roots(jnp.asarray(v), cfg.root_budget, cfg.roots_per_prompt, key=key))
        if cfg.method == "trace":
            return np.asarray(_allocate_roots_dp(jnp.asarray(v), cfg.root_budget, cfg.roots_per_prompt, key=key,
                                                 unit=2, objective=cfg.root_objective))
        if cfg.method == "tree_random":
            return np.asarray(_allocate_uniform(key, valid, cfg.root_budget, cfg.tree_group))
        return np.asarray(_allocate_uniform(key, valid, cfg.flat_roots, cfg.flat_group))

    def predictor_rows(self, params, out, leaves, idx, pcfg, target_mode: str = "direct"):
        """(x, y, w, valid) for every real node of the compacted trees (prompt rows on leaf 0, s = 0)."""
        B, L = leaves.shape
        T, S = self.agent_cfg.max_turns, self.agent_cfg.max_len
        recs = [out.records[p][l] if p >= 0 and l < len(out.records[p]) else None for p in idx for l in range(L)]
        x, _ = prefix_features(self.prefix_hidden, params, recs, B * L, S, T, self.pad_id, self._mode(pcfg))
        y, w = _node_rows(leaves, mode=target_mode)
        return x, y, w, w > 0

    def evaluate(self, params, cfg: TraceTrainConfig, key) -> dict:
        """Held-out accuracy: mean success (reward >= 1) over `eval_samples` episodes per question."""
        self.sampler.set_state(params)
        scfg = self.agent_cfg.sampling.replace(temperature=cfg.eval_temperature)
        agent = dataclasses.replace(self.agent_cfg, sampling=scfg)
        prompts = [p for p in self.heldout_prompts for _ in range(cfg.eval_samples)]
        _, recs = run_episodes(self.sampler, self.tok, self.make_env(10_000 + cfg.seed), prompts, key, agent)
        ok = np.array([r.reward >= 1.0 for r in recs], np.float64)
        return {"accuracy": float(ok.mean()), "eval_episodes": len(recs)}

    # ------------------------------------------------------------------ the loop
    def run(self, cfg: TraceTrainConfig, *, log: Callable[[str], None] | None = None,
            on_step: Callable[[dict, object], None] | None = None) -> RunOutput:
        """One run of `cfg` from the initial policy; stops after `cfg.steps` or when `token_budget` is spent."""
        step_fn, opt, lpo_cfg = self._train_step(cfg)
        params = jax.tree.map(jnp.copy, self.init_params)
        state = init_train_state(params, opt, jax.random.PRNGKey(cfg.seed))
        self.sampler.set_state(state.params)
        pcfg = self.predictor_config(cfg)
        pstate = predictor_init(pcfg, jax.random.PRNGKey(cfg.seed + 17))
        tree_cfg = TreeConfig(num_prompts=cfg.pool_prompts, roots_per_prompt=cfg.roots_slots,
                              multiplier=cfg.effective_multiplier, expansion=EXPANSION[cfg.method])
        rng = np.random.default_rng([cfg.seed, 41])
        make_env = self.make_env(cfg.seed)
        cost = collections.Counter()
        history, evals = [], []
        base_key = jax.random.PRNGKey(cfg.seed)
        # common random numbers: every evaluation of a seed (any method, any step) uses the same key and the
        # same env noise, so accuracy differences between methods / steps come from the policy, not the draw
        eval_key = jax.random.fold_in(base_key, _EVAL)

        def evaluate_now(step):
            evals.append({"step": step, **cost, **self.evaluate(state.params, cfg, eval_key)})

        evaluate_now(0)
        step, t_start = 0, time.time()
        while step < cfg.steps and not (cfg.token_budget and cost["generated_tokens"] >= cfg.token_budget):
            step += 1
            t0 = time.time()
            keys = [jax.random.fold_in(jax.random.fold_in(base_key, step), s) for s in range(5)]
            pool = rng.choice(len(self.train_prompts), cfg.pool_prompts, replace=False)
            prompts = [self.train_prompts[i] for i in pool]
            v = self.root_values(state.params, pcfg, pstate, prompts)
            m = self.allocate(cfg, v, keys[_ALLOC])
            out = rollout_tree(self.sampler, self.tok, make_env, prompts, m, keys[_ROLL], self.agent_cfg, tree_cfg,
                               prefix_value_fn=self.prefix_value_fn(state.params, pcfg, pstate))
            batch, extra, leaves, arrays, idx = make_batch(out, cfg.train_rows, cfg.advantage_used, lpo_cfg,
                                                           cfg.pad_leaves)
            x, y, w, valid = self.predictor_rows(state.params, out, leaves, idx, pcfg, cfg.predictor_target)
            pred_mse = float(weighted_mse(_predict(pcfg, pstate, x), y, w))
            state, metrics = step_fn(state, batch)
            self.sampler.set_state(state.params)
            pstate, pmetrics = predictor_step(pcfg, pstate, x, y, w, valid, keys[_PRED])
            for k, val in out.cost.items():
                cost[k] += int(val)
            tm = jax.device_get(_tree_metrics(leaves, jnp.asarray(out.K)[np.maximum(idx, 0)] * (idx >= 0)[:, None, None]))
            row = {"step": step, **{k: float(v) for k, v in tm.items()},
                   "active_prompts": int((idx >= 0).sum()), "roots": int(m.sum()),
                   "trajectories_step": int(out.cost["trajectories"]), "predictor_mse": pred_mse,
                   "predictor_loss": float(pmetrics["loss"]), "root_value_mean": float(np.mean(v)),
                   "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
                   "skipped": float(metrics["skipped"]), "step_s": time.time() - t0, **extra, **cost}
            history.append(row)
            if on_step is not None:
                on_step(row, out)
            if log:
                log(f"[{cfg.method}/{cfg.seed}] step {step} tokens {cost['generated_tokens']} contrast "
                    f"{row['contrast_ratio']:.2f} nonzero {row['nonzero_adv_frac']:.2f} reward {row['reward_mean']:.2f} "
                    f"pred_mse {pred_mse:.3f} {row['step_s']:.1f}s")
            if cfg.eval_every and step % cfg.eval_every == 0:
                evaluate_now(step)
        if evals[-1]["step"] != step:
            evaluate_now(step)
        mean = lambda k: float(np.mean([h[k] for h in history])) if history else 0.0  # noqa: E731
        summary = {"method": cfg.method, "advantage": cfg.advantage_used, "seed": cfg.seed, "steps": step,
                   "contrast_ratio": mean("contrast_ratio"), "nonzero_adv_frac": mean("nonzero_adv_frac"),
                   "mixed_subtree_rate": mean("mixed_subtree_rate"), "predictor_mse": mean("predictor_mse"),
                   "accuracy": evals[-1]["accuracy"], "base_accuracy": evals[0]["accuracy"],
                   "wall_s": time.time() - t_start, **cost}
        return RunOutput(summary=summary, history=history, evals=evals, params=state.params, predictor=pstate)
