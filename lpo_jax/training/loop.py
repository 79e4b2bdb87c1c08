"""The RL training loop: the one place that sequences the pure pieces and talks to the host.

Per RL step:  select prompts -> generate K samples each -> rewards -> selector update -> old log-probs ->
objective targets (advantages or LPO w*) -> ``train.mini_batches`` updates of whole groups -> metrics ->
periodic held-out evaluation and checkpoint.

Randomness is a pure function of (seed, RL step) (``builders.rl_key``), and every piece of state (train state,
selector state, counters) is checkpointed, so a resumed run reproduces an uninterrupted one bit for bit.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lpo_jax import hosts
from lpo_jax.eval import decode_completions, evaluate
from lpo_jax.tasks.prompts import PromptTokens
from lpo_jax.training import builders, checkpoint, rollout as rollout_lib
from lpo_jax.training.config import objective_from_config, validate
from lpo_jax.training.metrics import MetricsWriter, plot_curves, read_jsonl
from lpo_jax.training.state import init_train_state, make_optimizer, split_model
from lpo_jax.training.step import TrainBatch, batch_logprobs, make_train_step

_SELECT, _SAMPLE, _EVAL, _SELECTOR_INIT = 0, 1, 2, 3
CURVE_KEYS = ("reward_mean", "eval_accuracy", "effective_ratio", "kl_target_policy", "grad_norm", "entropy")


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. repeated non-finite updates); the last good checkpoint is intact."""


@dataclasses.dataclass
class RunResult:
    summary: dict
    state: object
    selector_state: object


def train(cfg: ml_collections.ConfigDict) -> dict:
    """Runs ``cfg`` (validated) and returns the summary dict printed as the run's last line."""
    return run(cfg).summary


def _sampling_config(cfg, tokenizer, task, *, temperature, max_new_tokens):
    from lpo_jax.sampling.config import SamplingConfig
    from lpo_jax.sampling.stop import stop_token_patterns
    stops = stop_token_patterns(tokenizer, task.stop_strings) if task.stop_strings else ()
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    return SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=cfg.rollout.top_k,
                          top_p=cfg.rollout.top_p, eos_ids=(tokenizer.eos_id,), stop_sequences=stops, pad_id=pad)


class _Runner:
    """Holds the built pieces of one run; methods are the loop's steps (host glue around jitted functions)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.mesh = builders.build_mesh(cfg)
        self.policy = builders.build_policy(cfg, self.mesh)
        self.tok = self.policy.tokenizer
        self.task = builders.build_task(cfg, self.tok)
        self.objective = objective_from_config(cfg)
        self.selector = builders.build_selector(cfg, self.task)
        self.graphdef, params = split_model(self.policy.model)
        self.optimizer = make_optimizer(
            lr=cfg.optim.lr, b1=cfg.optim.b1, b2=cfg.optim.b2, weight_decay=cfg.optim.weight_decay,
            warmup_steps=cfg.optim.warmup_steps, schedule=cfg.optim.schedule,
            total_steps=cfg.steps * cfg.train.mini_batches, grad_clip=cfg.optim.grad_clip)
        state = init_train_state(params, self.optimizer, jax.random.PRNGKey(cfg.seed))
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        # every leaf lives on the mesh (scalars replicated), so a restored state is placed like a fresh one
        self.init_state = jax.tree.map(
            lambda x: x if len(x.sharding.device_set) == self.mesh.size else jax.device_put(x, replicated), state)
        self.ref_params = params if (self.objective.config.kl_coef or 0) > 0 else None
        from lpo_jax.sampling.sampler import Sampler
        self.sampler = Sampler((self.graphdef, params), mesh=self.mesh)
        self.prompt_len = cfg.task.max_prompt_len
        self.pad_id = self.tok.pad_id if self.tok.pad_id is not None else self.tok.eos_id
        self.rollout_cfg = _sampling_config(cfg, self.tok, self.task, temperature=cfg.rollout.temperature,
                                            max_new_tokens=cfg.rollout.max_new_tokens)
        self.eval_cfg = _sampling_config(cfg, self.tok, self.task, temperature=cfg.eval.temperature,
                                         max_new_tokens=cfg.rollout.max_new_tokens)
        self.logp_fn = jax.jit(functools.partial(batch_logprobs, self.graphdef, logits_chunk=cfg.train.logits_chunk),
                               static_argnames="prompt_len")
        self.prepare = jax.jit(functools.partial(self.objective.prepare, cfg=self.objective.config))
        loss = functools.partial(self.objective.loss, cfg=self.objective.config)
        with_entropy = True
        step = make_train_step(self.graphdef, loss, self.optimizer, prompt_len=self.prompt_len,
                               micro_batches=cfg.train.micro_batches, with_entropy=with_entropy,
                               token_weighted=self.objective.config.loss_agg == "token-mean",
                               logits_chunk=cfg.train.logits_chunk)
        self.train_step = jax.jit(step, donate_argnums=0)
        self.select = jax.jit(self.selector.select)
        self.update = jax.jit(self.selector.update, static_argnums=3)
        self._jits = {}
        self.candidates = self.rep(np.arange(len(self.task.train), dtype=np.int32))

    # ---------------------------------------------------------------- hosts
    def rep(self, tree):
        """Host values -> replicated over the mesh when multi-host (selector inputs, keys); as is otherwise."""
        if hosts.count() == 1:
            return jax.tree.map(jnp.asarray, tree)
        return hosts.replicate(tree, self.mesh)

    def gathered(self, r: rollout_lib.Rollouts) -> dict:
        """Per-group results of every process (process order), for the selector and the metrics."""
        return {"ids": hosts.allgather(r.prompt_ids_B), "rewards_BK": hosts.allgather(r.rewards_BK),
                "successes_B": hosts.allgather(r.successes_B),
                "trained_B": hosts.allgather(r.loss_mask_BKT.sum((1, 2)) > 0),
                "generated_tokens": int(hosts.allgather(np.asarray([r.generated_tokens])).sum()),
                "reward_errors": int(hosts.allgather(np.asarray([r.reward_errors])).sum())}

    # ---------------------------------------------------------------- rollouts
    def rollouts(self, ids, key) -> rollout_lib.Rollouts:
        """This process's block of the selected prompts ``ids`` (all of them single-host), K samples each."""
        K = self.cfg.rollout.group_size
        ids = np.asarray(ids)[hosts.block(len(ids))]
        prompts = [self.task.train_tokens[i] for i in ids]
        out = self.sampler.generate(prompts, key, self.rollout_cfg, num_samples=K)
        texts = decode_completions(self.tok, out, self.task.stop_strings)
        rewards, stats = rollout_lib.score(self.task.reward_fn, texts, [self.task.train[i] for i in ids], len(ids), K)
        ptoks, pmask = PromptTokens(ids=prompts, max_prompt_len=self.prompt_len).left_padded(self.pad_id)
        B, T = len(ids), self.rollout_cfg.max_new_tokens
        return rollout_lib.assemble(ids, ptoks, pmask, out.tokens.reshape(B, K, T), out.mask.reshape(B, K, T),
                                    out.logprobs.reshape(B, K, T), rewards, texts, stats)

    def dynamic_sampling(self, sel_state, key):
        """DAPO dynamic sampling: uniform batches, keep mixed-reward groups, up to max_gen_rounds rounds.

        Multi-host: each process keeps the mixed groups of its own block; rounds go on until every process has
        its share (or the round limit), so all processes run the same number of generation rounds."""
        B, kept, rounds, spent = self.cfg.rollout.batch_prompts // hosts.count(), [], 0, 0
        last = None
        while rounds < self.cfg.selector.max_gen_rounds and hosts.global_max(
                -sum(len(k.prompt_ids_B) for k in kept)) > -B:
            k_sel, k_gen = jax.random.split(jax.random.fold_in(key, rounds))
            sel_state, ids, _ = self.select(sel_state, self.candidates, self.rep(k_sel))
            last = self.rollouts(np.asarray(ids), k_gen)
            rounds += 1
            spent += last.rewards_BK.size * hosts.count()
            mixed = np.flatnonzero(last.rewards_BK.std(-1) > 0)
            if len(mixed):
                kept.append(rollout_lib.take(last, mixed))
        batch = rollout_lib.concat(kept) if kept else rollout_lib.take(last, np.arange(0))
        n_kept = len(batch.prompt_ids_B)
        if n_kept >= B:
            batch = rollout_lib.take(batch, np.arange(B))
        else:  # too few mixed groups: pad with groups whose loss mask is zero (they add no gradient)
            pad = rollout_lib.take(last, np.arange(B - n_kept))
            pad.loss_mask_BKT = np.zeros_like(pad.loss_mask_BKT)
            batch = rollout_lib.concat([batch, pad]) if n_kept else pad
        return sel_state, batch, rounds, spent, n_kept

    # ---------------------------------------------------------------- updates
    def _put(self, x):
        """Host rows -> a batch-sharded array (multi-host: this process's rows of a global array)."""
        from lpo_jax.models.sharding import batch_sharding
        if hosts.count() > 1 and not isinstance(x, jax.Array):
            x = np.asarray(x)
            return hosts.to_global(x, batch_sharding(self.mesh, (x.shape[0] * hosts.count(),) + x.shape[1:]))
        x = jnp.asarray(x)
        dp = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if x.ndim and x.shape[0] % dp == 0:
            return jax.device_put(x, batch_sharding(self.mesh, x.shape))
        return x

    def _minibatch(self, full: TrainBatch, m: int) -> TrainBatch:
        """Mini-batch m of M: rows [m*per, (m+1)*per) of every process's block (one block single-host)."""
        M, P = self.cfg.train.mini_batches, hosts.count()
        if P == 1:
            per = full.tokens_BKL.shape[0] // M
            return jax.tree.map(lambda x: self._put(x[m * per:(m + 1) * per]), full)
        fn = self._jits.get(("minibatch", m))
        if fn is None:
            def take(x):
                blocks = x.reshape((P, M, x.shape[0] // (P * M)) + x.shape[1:])[:, m]
                return blocks.reshape((-1,) + x.shape[1:])
            fn = self._jits[("minibatch", m)] = jax.jit(lambda tree: jax.tree.map(take, tree))
        return fn(full)

    def update_policy(self, state, r: rollout_lib.Rollouts):
        """Old log-probs, objective targets, then mini-batch updates; returns (state, averaged metrics)."""
        tokens, attn = self._put(r.tokens_BKL), self._put(r.attn_mask_BKL)
        mask = self._put(r.loss_mask_BKT)
        if self.cfg.rollout.old_logprobs == "trainer":
            old = self.logp_fn(state.params, tokens, attn, prompt_len=self.prompt_len)
        else:
            old = self._put(r.sampler_logp_BKT)
        ref = (self.logp_fn(self.ref_params, tokens, attn, prompt_len=self.prompt_len)
               if self.ref_params is not None else None)
        targets = self.prepare(self._put(r.rewards_BK), mask)
        full = TrainBatch(tokens, attn, mask, old, ref, targets)
        history = []
        for m in range(self.cfg.train.mini_batches):
            state, metrics = self.train_step(state, self._minibatch(full, m))
            history.append(metrics)
        metrics = jax.device_get(history)
        avg = {k: float(np.mean([h[k] for h in metrics])) for k in metrics[0]}
        avg["skipped"] = float(sum(h["skipped"] for h in metrics))
        return state, avg

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, key) -> dict:
        """avg@k and pass@k on the held-out prompts at the eval temperature."""
        return evaluate(self.sampler, self.tok, self.task.eval, self.task.eval_tokens, self.task.reward_fn,
                        self.eval_cfg, self.cfg.eval.num_samples, key, stop_strings=self.task.stop_strings)


def _spearman(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a[ok])), np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def evaluate_checkpoint(run_dir: str, step: int | None = None, num_samples: int = 0) -> dict:
    """Held-out avg@k / pass@k of a run's orbax checkpoint, rebuilt from the config saved with it.

    Uses the loop's evaluation key for that step, so it reproduces the number the run logged there.
    ``num_samples`` > 0 overrides k (config.eval.num_samples).
    """
    ckpt_dir = os.path.join(os.path.abspath(run_dir), "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise checkpoint.CheckpointError(f"{ckpt_dir} does not exist; pass a run directory "
                                         "(output_dir/run_name of a training run) that holds checkpoints/")
    with checkpoint.open_manager(ckpt_dir) as manager:
        step, meta = checkpoint.read_meta(manager, step)
        cfg = ml_collections.ConfigDict(meta["config"])
        if num_samples:
            cfg.eval.num_samples = num_samples
        R = _Runner(validate(cfg))
        sel_state = jax.jit(R.selector.init)(builders.rl_key(cfg.seed, 0, _SELECTOR_INIT))
        _, arrays, _ = checkpoint.restore(manager, {"train": R.init_state, "selector": sel_state}, step)
    R.sampler.set_state(arrays["train"].params)
    return {"run_dir": os.path.abspath(run_dir), "step": step, "prompts": len(R.task.eval),
            "k": cfg.eval.num_samples, **R.evaluate(builders.rl_key(cfg.seed, step, _EVAL))}


def process_start_time() -> float:
    """Wall-clock time this process was launched (Linux /proc), else now: ``first_step_s`` counts from it."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time, clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def run(cfg: ml_collections.ConfigDict) -> RunResult:
    """The loop. Returns the summary plus the final train and selector states."""
    launch = process_start_time()
    if cfg.distributed:  # before any other JAX call
        jax.distributed.initialize()  # auto-detects TPU pods, SLURM and Open MPI
    if cfg.compilation_cache and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cfg.compilation_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    run_dir = os.path.abspath(os.path.join(cfg.output_dir, cfg.run_name))
    os.makedirs(run_dir, exist_ok=True)
    R = _Runner(cfg)
    state = R.init_state
    sel_state = jax.jit(R.selector.init)(R.rep(builders.rl_key(cfg.seed, 0, _SELECTOR_INIT)))
    meta = {"rl_step": 0, "rollouts": 0, "generated_tokens": 0, "nonfinite_updates": 0, "reward_errors": 0,
            "evals": []}
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    manager = checkpoint.open_manager(ckpt_dir, keep=cfg.checkpoint.keep)
    resumed = False
    if cfg.checkpoint.resume and manager.latest_step() is not None:
        _, arrays, saved = checkpoint.restore(manager, {"train": state, "selector": sel_state})
        state, sel_state = arrays["train"], arrays["selector"]
        R.sampler.set_state(state.params)  # roll out with the restored policy, not the initial one
        meta.update({k: v for k, v in saved.items() if k != "config"})
        resumed = True
    writer = MetricsWriter(run_dir, tensorboard=cfg.log.tensorboard and hosts.is_main(),
                           wandb=cfg.log.wandb and hosts.is_main(), config=cfg.to_dict(), append=resumed,
                           enabled=hosts.is_main())
    if resumed and hosts.is_main():  # drop rows written after the checkpoint, so the file matches an uninterrupted run
        rows = [r for r in read_jsonl(writer.path) if r["step"] <= meta["rl_step"]]
        with open(writer.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def save(step):
        meta_out = dict(meta, config=json.loads(cfg.to_json_best_effort()))
        checkpoint.save(manager, step, {"train": state, "selector": sel_state}, meta_out, force=True)

    if not meta["evals"]:
        base = R.evaluate(builders.rl_key(cfg.seed, 0, _EVAL))
        meta["evals"].append({"step": 0, **base})
        writer.write(0, base)
    progress = None
    if cfg.log.progress and hosts.is_main():
        from tqdm import tqdm
        progress = tqdm(total=cfg.steps, initial=meta["rl_step"], desc=cfg.run_name, dynamic_ncols=True)
    first_step_s = None
    t_rl = time.time()
    consecutive_skips = 0
    stopped_early = False
    try:
        while meta["rl_step"] < cfg.steps:
            if cfg.max_minutes and (time.time() - t_rl) / 60 > cfg.max_minutes:
                stopped_early = True
                break
            step = meta["rl_step"] + 1
            t_step = time.time()
            key_sel = builders.rl_key(cfg.seed, step, _SELECT)
            key_gen = builders.rl_key(cfg.seed, step, _SAMPLE)
            extra = {}
            if cfg.selector.name == "ds":
                sel_state, r, rounds, spent, n_kept = R.dynamic_sampling(sel_state, key_sel)
                extra.update(ds_rounds=rounds, ds_kept=n_kept)
                pred = None
            else:
                sel_state, ids, pred_all = R.select(sel_state, R.candidates, R.rep(key_sel))
                ids = np.asarray(ids)
                r = R.rollouts(ids, key_gen)
                pred = np.asarray(pred_all)[ids]
            g = R.gathered(r)
            if cfg.selector.name != "ds":
                spent = g["rewards_BK"].size
                sel_state = R.update(sel_state, R.rep(g["ids"]), R.rep(g["successes_B"]), cfg.rollout.group_size)
            state, metrics = R.update_policy(state, r)
            R.sampler.set_state(state.params)
            K = cfg.rollout.group_size
            rewards_BK, successes_B, trained = g["rewards_BK"], g["successes_B"], g["trained_B"]
            mixed = (successes_B > 0) & (successes_B < K)
            meta["rl_step"] = step
            meta["rollouts"] += int(spent)
            meta["generated_tokens"] += g["generated_tokens"]
            meta["reward_errors"] += g["reward_errors"]
            skipped = metrics.pop("skipped")
            meta["nonfinite_updates"] += int(skipped)
            consecutive_skips = consecutive_skips + 1 if skipped else 0
            dt = time.time() - t_step
            if first_step_s is None:
                first_step_s = time.time() - launch
            row = dict(metrics, reward_mean=float(rewards_BK[trained].mean()) if trained.any() else 0.0,
                       accuracy=float((rewards_BK[trained] >= 1).mean()) if trained.any() else 0.0,
                       effective_ratio=float(mixed[trained].mean()) if trained.any() else 0.0,
                       rollouts=meta["rollouts"], generated_tokens=meta["generated_tokens"],
                       tokens_per_s=g["generated_tokens"] / max(dt, 1e-9), step_s=dt,
                       reward_errors=g["reward_errors"], skipped_updates=skipped, **extra)
            if pred is not None and np.isfinite(pred).any():
                row["pred_spearman"] = _spearman(pred, successes_B / K)
            if r.reward_errors:
                row["reward_first_error"] = r.reward_first_error
            if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.steps:
                ev = R.evaluate(builders.rl_key(cfg.seed, step, _EVAL))
                meta["evals"].append({"step": step, **ev})
                row.update(ev)
            writer.write(step, {k: v for k, v in row.items() if not isinstance(v, str)})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(reward=f"{row['reward_mean']:.2f}", acc=f"{row['accuracy']:.2f}",
                                     rollouts=meta["rollouts"], tok_s=f"{row['tokens_per_s']:.0f}")
            if consecutive_skips >= max(cfg.train.max_nonfinite, 1):
                raise TrainingError(
                    f"{consecutive_skips} consecutive updates had a non-finite loss or gradient (step {step}); "
                    f"stopping. The last good checkpoint in {ckpt_dir} is intact. Lower config.optim.lr, check the "
                    "reward scale, or set config.optim.grad_clip.")
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and not skipped:
                save(step)
    finally:
        if progress is not None:
            progress.close()
    final = R.evaluate(builders.rl_key(cfg.seed, meta["rl_step"], _EVAL))
    if not meta["evals"] or meta["evals"][-1]["step"] != meta["rl_step"]:
        meta["evals"].append({"step": meta["rl_step"], **final})
    writer.write(meta["rl_step"], final)
    writer.close()
    if meta["rl_step"] not in manager.all_steps():
        save(meta["rl_step"])
    manager.wait_until_finished()
    manager.close()
    curves = os.path.join(run_dir, "curves.png")
    if hosts.is_main():
        plot_curves(read_jsonl(writer.path), curves, CURVE_KEYS,
                    title=f"{cfg.run_name}: {cfg.objective.name} + {cfg.selector.name}")
    export = None
    if cfg.checkpoint.export_hf:
        from lpo_jax.models import save_hf
        from flax import nnx
        export = os.path.join(run_dir, "hf_export")
        params = hosts.gather_tree(state.params)  # collective: every process takes part
        if hosts.is_main():
            save_hf(nnx.merge(R.graphdef, params), export)
            R.tok.save(export)
    summary = {"run": cfg.run_name, "base_accuracy": meta["evals"][0]["eval_accuracy"],
               "final_accuracy": final["eval_accuracy"], "steps": meta["rl_step"], "rollouts": meta["rollouts"],
               "wall_s": round(time.time() - t_rl, 2), "first_step_s": round(first_step_s or 0.0, 2),
               "checkpoint": ckpt_dir, "curves": curves, "hf_export": export,
               "nonfinite_updates": meta["nonfinite_updates"], "reward_errors": meta["reward_errors"],
               "stopped_early": stopped_early}
    if R.policy.sft_s:
        summary["sft_s"] = round(R.policy.sft_s, 2)
    return RunResult(summary=summary, state=state, selector_state=sel_state)
