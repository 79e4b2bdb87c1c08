"""Paper-style comparisons on the CPU testbed at equal rollouts, several seeds -> docs/results.md + PNG plots.

    python experiments/reproduce.py                               # every section, 3 seeds (~45 min, quiet 2-core CPU)
    python experiments/reproduce.py --sections selection --seeds 2 --steps 12
    python experiments/reproduce.py --smoke --out /tmp/repro      # tiny random policy: checks the pipeline (~1 min)

Sections:
  objectives  GRPO vs LPO-fwd vs LPO-rev, and the Dr.GRPO / MaxRL pairings (LPO-fwd with the Dr.GRPO or MaxRL
              temperature), all with Uniform selection, so every method spends exactly steps x B x K rollouts.
  selection   Uniform vs DS vs MoPPS vs DPS vs GPS with LPO-fwd. DS spends more rollouts per step (discarded
              groups count), so methods are compared on held-out accuracy vs rollouts spent: accuracy at the
              common budget (steps x B x K; DS's curve is interpolated there) and rollouts/steps to a target.
  trace       flat GRPO vs random trees vs TRACE at equal tokens: experiments/compare_trace.py's compare().

Decisions: every run starts from the same warm start (the cached seed-0 SFT policy, so seed pairs are matched and
the SFT is paid once); `--seeds n` varies the RL randomness (prompt selection, sampling, evaluation) with seeds
0..n-1. All runs share one process, so imports and the persistent XLA cache (~/.cache/lpo_jax/xla) are reused.
Finished runs are kept under --runs and skipped when the script is rerun with the same settings (an interrupted
reproduction resumes where it stopped). Accuracy is held-out avg@k at the eval temperature (loop defaults).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, _ROOT)

SECTIONS = ("objectives", "selection", "trace")
# (label, objective preset, objective overrides): LPO pairs its temperature with the baseline it is compared to.
OBJECTIVE_METHODS = (
    ("GRPO", "grpo", {}),
    ("LPO-fwd", "lpo_fwd", {}),
    ("LPO-rev", "lpo_rev", {}),
    ("Dr.GRPO", "drgrpo", {}),
    ("LPO-fwd (Dr.GRPO tau)", "lpo_fwd", {"baseline": "drgrpo"}),
    ("MaxRL", "maxrl", {}),
    ("LPO-fwd (MaxRL tau)", "lpo_fwd", {"baseline": "maxrl"}),
)
SELECTION_METHODS = (("Uniform", "uniform"), ("DS", "ds"), ("MoPPS", "mopps"), ("DPS", "dps"), ("GPS", "gps"))
SELECTION_OBJECTIVE = "lpo_fwd"


@dataclasses.dataclass(frozen=True)
class Setting:
    """Everything that determines a run besides its method and seed (part of each run's cache key)."""

    steps: int = 16
    batch_prompts: int = 16
    group_size: int = 8
    eval_every: int = 2
    num_eval: int = 256
    eval_samples: int = 4
    num_train: int = 0          # 0 = task default (4096)
    max_new_tokens: int = 16
    max_prompt_len: int = 64
    embedder: str = "wordllama"
    policy: str = "testbed-sft-seed0"


def smoke_setting() -> Setting:
    """Shapes equal to tests/training/test_loop.py's tiny runs, so the test suite's XLA cache serves both."""
    return Setting(steps=2, batch_prompts=8, group_size=4, eval_every=1, num_eval=8, eval_samples=2, num_train=48,
                   max_new_tokens=6, max_prompt_len=16, embedder="hashing", policy="tiny-random")


# ------------------------------------------------------------------------------------------------ runs
def policy_path(setting: Setting, runs_dir: str) -> str:
    from lpo_jax.tasks.testbed_policy import ensure_testbed_policy, tiny_random_policy
    if setting.policy == "tiny-random":
        return tiny_random_policy(os.path.join(runs_dir, "tiny_policy"))
    return ensure_testbed_policy(seed=0)[0]


def make_config(setting: Setting, runs_dir: str, run_name: str, *, objective: str, overrides: dict, selector: str,
                seed: int, policy: str):
    from lpo_jax.training.config import base_config, validate
    c = base_config()
    c.run_name, c.output_dir, c.seed, c.steps = run_name, runs_dir, seed, setting.steps
    c.model.source, c.model.path = "hf", policy
    c.task.num_train, c.task.num_eval = setting.num_train, setting.num_eval
    c.task.max_prompt_len = setting.max_prompt_len
    c.rollout.batch_prompts, c.rollout.group_size = setting.batch_prompts, setting.group_size
    c.rollout.max_new_tokens = setting.max_new_tokens
    c.objective.name = objective
    for key, value in overrides.items():
        c.objective[key] = value
    c.selector.name, c.selector.embedder = selector, setting.embedder
    c.eval.every, c.eval.num_samples = setting.eval_every, setting.eval_samples
    c.checkpoint.every, c.checkpoint.export_hf = 0, False
    c.log.progress, c.log.tensorboard = False, False
    return validate(c)


def read_run(metrics_path: str) -> dict:
    """Per-run record from metrics.jsonl: eval curve (step, rollouts, avg@k), effective ratio, rollouts."""
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    rollouts_at = {0: 0}
    eff = []
    for r in rows:
        if "rollouts" in r:
            rollouts_at[r["step"]] = r["rollouts"]
            if r.get("effective_ratio") is not None:
                eff.append(r["effective_ratio"])
    curve = {}
    for r in rows:
        if r.get("eval_accuracy") is not None:
            curve[r["step"]] = (r["step"], rollouts_at.get(r["step"], 0), r["eval_accuracy"])
    curve = [curve[s] for s in sorted(curve)]
    pass_key = next((k for r in rows for k in r if k.startswith("eval_pass@")), None)
    final_pass = [r[pass_key] for r in rows if pass_key and r.get(pass_key) is not None]
    return {"curve": curve, "effective_ratio": float(np.mean(eff)) if eff else float("nan"),
            "rollouts": max(rollouts_at.values()), "final_accuracy": curve[-1][2], "base_accuracy": curve[0][2],
            "final_pass": final_pass[-1] if final_pass else float("nan"), "pass_key": pass_key or "eval_pass@k"}


def run_once(setting: Setting, runs_dir: str, run_name: str, policy: str, log, reuse_only=False, **method):
    """Trains one run (or reuses a finished one with the same settings) and returns its record; with
    reuse_only, a run that has not finished yet is skipped (None)."""
    key = hashlib.sha256(json.dumps([dataclasses.asdict(setting), method], sort_keys=True).encode()).hexdigest()[:12]
    run_dir = os.path.join(runs_dir, run_name)
    done = os.path.join(run_dir, "reproduce_record.json")
    if os.path.isfile(done):
        record = json.load(open(done))
        if record.get("key") == key:
            log(f"  {run_name}: reused (final avg@k {record['final_accuracy']:.3f})")
            return record
    if reuse_only:
        log(f"  {run_name}: not finished yet, left out (--reuse-only)")
        return None
    import shutil
    shutil.rmtree(run_dir, ignore_errors=True)  # stale settings: start fresh
    from lpo_jax.training.loop import train
    cfg = make_config(setting, runs_dir, run_name, policy=policy, **method)
    t0 = time.time()
    summary = train(cfg)
    record = read_run(os.path.join(run_dir, "metrics.jsonl"))
    record.update(key=key, wall_s=time.time() - t0, summary=summary)
    with open(done, "w") as f:
        json.dump(record, f)
    log(f"  {run_name}: avg@k {record['base_accuracy']:.3f} -> {record['final_accuracy']:.3f}, "
        f"{record['rollouts']} rollouts, {record['wall_s']:.0f}s")
    return record


# ------------------------------------------------------------------------------------------------ statistics
def mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values, digits=3) -> str:
    """'mean ± std' over the finite values; a single value is shown alone (no spread estimate)."""
    m, s = mean_std(values)
    if not np.isfinite(m):
        return "n/a"
    single = sum(1 for x in values if x is not None and np.isfinite(x)) == 1
    return f"{m:.{digits}f}" if single else f"{m:.{digits}f} ± {s:.{digits}f}"


def accuracy_at_rollouts(curve, budget: float) -> float:
    """Held-out accuracy at `budget` rollouts, linearly interpolated on the eval curve (NaN if never reached)."""
    xs = np.array([c[1] for c in curve], np.float64)
    ys = np.array([c[2] for c in curve], np.float64)
    if budget > xs.max() + 1e-9:
        return float("nan")
    return float(np.interp(budget, xs, ys))


def first_reaching(curve, target: float):
    """(step, rollouts) of the first evaluation with accuracy >= target, or None."""
    for step, rollouts, acc in curve:
        if acc >= target - 1e-12:
            return step, rollouts
    return None


def mean_curve(records, x_index: int):
    """Mean and std over seeds of accuracy on a common x grid (step or rollouts), interpolated per seed."""
    grid = np.unique(np.concatenate([[c[x_index] for c in r["curve"]] for r in records]).astype(np.float64))
    grid = grid[grid <= min(max(c[x_index] for c in r["curve"]) for r in records)]
    ys = np.stack([np.interp(grid, [c[x_index] for c in r["curve"]], [c[2] for c in r["curve"]]) for r in records])
    return grid, ys.mean(0), ys.std(0)


# ------------------------------------------------------------------------------------------------ plots
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(groups: dict, path: str, *, x_index: int, xlabel: str, title: str, panels=None) -> str:
    plt = _plt()
    panels = panels or [list(groups)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, labels in zip(axes[0], panels):
        for label in labels:
            x, m, s = mean_curve(groups[label], x_index)
            ax.plot(x, m, marker=".", label=label)
            ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out avg@k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(values: dict, path: str, *, ylabel: str, title: str) -> str:
    """values: {label: [per-seed numbers]} -> bar chart of mean ± std."""
    plt = _plt()
    labels = list(values)
    stats = [mean_std(values[k]) for k in labels]
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 3.5))
    ax.bar(range(len(labels)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ sections
def section_objectives(setting, seeds, runs_dir, out_dir, policy, log, cache, methods=None, reuse_only=False):
    groups = {}
    for label, objective, overrides in OBJECTIVE_METHODS:
        if methods and label not in methods:
            continue
        groups[label] = [cache_run(cache, setting, runs_dir, policy, log, objective, overrides, "uniform", s,
                                   reuse_only) for s in seeds]
    groups = _by_method_finished(groups)
    if not groups:
        return {"table": "No finished runs yet.", "pngs": [], "groups": {}, "pairs": []}
    k = next(iter(groups.values()))[0]["pass_key"].split("@")[-1]
    lines = [f"| objective | final avg@{k} | gain over warm start | final pass@{k} | effective-batch ratio | "
             "rollouts | wall s / run | seeds |", "|---|---|---|---|---|---|---|---|"]
    for label, recs in groups.items():
        lines.append(f"| {label} | {fmt([r['final_accuracy'] for r in recs])} | "
                     f"{fmt([r['final_accuracy'] - r['base_accuracy'] for r in recs])} | "
                     f"{fmt([r['final_pass'] for r in recs])} | {fmt([r['effective_ratio'] for r in recs])} | "
                     f"{int(np.mean([r['rollouts'] for r in recs]))} | {np.mean([r['wall_s'] for r in recs]):.0f} | "
                     f"{len(recs)} |")
    pairs = [("LPO-fwd", "GRPO"), ("LPO-rev", "GRPO"), ("LPO-fwd (Dr.GRPO tau)", "Dr.GRPO"),
             ("LPO-fwd (MaxRL tau)", "MaxRL")]
    lines += ["", "Paired differences in final accuracy (same seed, same warm start; mean ± std over seeds):", ""]
    lines += ["| pair | Δ final avg@k | seeds where LPO is higher |", "|---|---|---|"]
    pairs = [(a, b) for a, b in pairs if a in groups and b in groups]
    for a, b in pairs:
        d = paired(groups[a], groups[b], lambda r: r["final_accuracy"])
        lines.append(f"| {a} − {b} | {fmt(d)} | {sum(x > 0 for x in d)}/{len(d)} |")
    png = plot_curves(groups, os.path.join(out_dir, "objectives_accuracy.png"), x_index=0, xlabel="RL step",
                      title="Objectives (Uniform selection): held-out accuracy, mean ± std over seeds",
                      panels=[p for p in ([m for m in ("GRPO", "LPO-fwd", "LPO-rev") if m in groups],
                                          [m for m in ("Dr.GRPO", "LPO-fwd (Dr.GRPO tau)", "MaxRL",
                                                       "LPO-fwd (MaxRL tau)") if m in groups]) if p])
    return {"table": "\n".join(lines), "pngs": [png], "groups": groups, "pairs": pairs}


def section_selection(setting, seeds, runs_dir, out_dir, policy, log, cache, target=None, methods=None,
                      reuse_only=False):
    groups = {label: [cache_run(cache, setting, runs_dir, policy, log, SELECTION_OBJECTIVE, {}, name, s, reuse_only)
                      for s in seeds] for label, name in SELECTION_METHODS
              if not methods or label in methods or label == "Uniform"}  # Uniform: the reference
    groups = _by_method_finished(groups)
    if "Uniform" not in groups:
        return {"table": "Not enough finished runs yet (Uniform, the reference, has none).", "pngs": [],
                "groups": {}, "target": float("nan"), "budget": 0}
    budget = setting.steps * setting.batch_prompts * setting.group_size
    base = mean_std([r["base_accuracy"] for recs in groups.values() for r in recs])[0]
    if target is None:  # 80% of the gain Uniform makes over the warm start (means over seeds)
        target = base + 0.8 * (mean_std([r["final_accuracy"] for r in groups["Uniform"]])[0] - base)
    k = groups["Uniform"][0]["pass_key"].split("@")[-1]
    lines = [f"Equal-rollout budget: {budget} rollouts ({setting.steps} steps x {setting.batch_prompts} prompts x "
             f"{setting.group_size}); target accuracy {target:.3f} (warm start {base:.3f} + 80% of Uniform's mean "
             "gain, unless --target is given).", "",
             f"| selector | avg@{k} at {budget} rollouts | final avg@{k} | rollouts spent | effective-batch ratio | "
             "steps to target | rollouts to target | seeds reaching target |", "|---|---|---|---|---|---|---|---|"]
    for label, recs in groups.items():
        hits = [first_reaching(r["curve"], target) for r in recs]
        lines.append(
            f"| {label} | {fmt([accuracy_at_rollouts(r['curve'], budget) for r in recs])} | "
            f"{fmt([r['final_accuracy'] for r in recs])} | {fmt([r['rollouts'] for r in recs], 0)} | "
            f"{fmt([r['effective_ratio'] for r in recs])} | {fmt([h[0] for h in hits if h], 1)} | "
            f"{fmt([h[1] for h in hits if h], 0)} | {sum(h is not None for h in hits)}/{len(hits)} |")
    pngs = [plot_curves(groups, os.path.join(out_dir, "selection_accuracy_vs_rollouts.png"), x_index=1,
                        xlabel="rollouts spent", title="Prompt selection (LPO-fwd): accuracy vs rollouts spent"),
            plot_bars({lab: [r["effective_ratio"] for r in recs] for lab, recs in groups.items()},
                      os.path.join(out_dir, "selection_effective_ratio.png"), ylabel="mixed groups / trained",
                      title="Effective-batch ratio")]
    return {"table": "\n".join(lines), "pngs": pngs, "groups": groups, "target": target, "budget": budget}


def cache_run(cache, setting, runs_dir, policy, log, objective, overrides, selector, seed, reuse_only=False):
    """One run per (objective, overrides, selector, seed): LPO-fwd + Uniform is shared by both sections."""
    key = (objective, json.dumps(overrides, sort_keys=True), selector, seed)
    if key not in cache:
        slug = "_".join([objective, *[f"{k}-{v}" for k, v in sorted(overrides.items())], selector, f"s{seed}"])
        record = run_once(setting, runs_dir, slug, policy, log, reuse_only, objective=objective,
                          overrides=overrides, selector=selector, seed=seed)
        cache[key] = None if record is None else dict(record, seed=seed)
    return cache[key]


def _by_method_finished(groups: dict) -> dict:
    """Drops runs left out by --reuse-only (and methods with none); pairs are then matched by seed."""
    groups = {k: [r for r in recs if r is not None] for k, recs in groups.items()}
    return {k: recs for k, recs in groups.items() if recs}


def paired(recs_a, recs_b, value) -> list:
    """value(a) - value(b) for the runs of a and b with the same seed."""
    by_seed = {r["seed"]: r for r in recs_b}
    return [value(a) - value(by_seed[a["seed"]]) for a in recs_a if a["seed"] in by_seed]


def section_trace(seeds, smoke, out_dir, log, path=None, runs_dir=None, reuse_only=False):
    """experiments/compare_trace.py's compare(), imported lazily (it is optional); per-seed numbers -> mean ± std.

    The result is kept in runs_dir (when given) and reused by a rerun with the same seeds and setting."""
    path = path or os.path.join(_ROOT, "experiments", "compare_trace.py")
    if not os.path.isfile(path):
        return {"table": "Not run: experiments/compare_trace.py is not in this checkout.", "pngs": []}
    name = f"trace_{'smoke' if smoke else 'full'}_{'-'.join(map(str, seeds))}.json"
    saved = runs_dir and os.path.join(runs_dir, name)
    if saved and os.path.isfile(saved):
        result = json.load(open(saved))
        wall = result["reproduce_wall_s"]
        log(f"  trace: reused {saved}")
    elif reuse_only:
        return {"table": "Not finished yet (rerun without --reuse-only).", "pngs": []}
    else:
        spec = importlib.util.spec_from_file_location("compare_trace", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(spec.name, module)
        spec.loader.exec_module(module)
        t0 = time.time()
        result = module.compare(seeds=tuple(seeds), smoke=smoke, out_dir=out_dir,
                                log=lambda m: log(f"  [{time.time() - t0:6.0f}s] {m}"))
        wall = time.time() - t0
        if saved:
            with open(saved, "w") as f:
                json.dump({k: v for k, v in result.items() if k in ("equalized", "methods", "per_seed", "plot")}
                          | {"reproduce_wall_s": wall}, f)
    labels = {"grpo_flat": "flat GRPO", "tree_random": "random trees", "trace": "TRACE",
              "trace_groups": "TRACE, spec stage-1 objective"}
    metrics = ("contrast_ratio", "nonzero_adv_frac", "accuracy")
    per_seed = result.get("per_seed") or {m: [v] for m, v in result["methods"].items()}
    lines = [f"Equalized: generated {result.get('equalized', 'tokens')} (every method stops at the same token "
             f"budget); SynthHop multi-hop QA with a local search tool; {len(seeds)} seed(s); "
             f"{wall / 60:.1f} min. contrast_ratio = fraction of trained prompts with mixed rewards; "
             "nonzero_adv_frac = fraction of loss tokens with a non-zero advantage; accuracy = held-out.", "",
             "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    if "trace_groups" in per_seed:
        lines[0] += (" TRACE's stage 1 maximises the expected number of roots in mixed groups (ours); the spec's "
                     "objective, the expected number of mixed groups, is the last row.")
    for name in labels:
        if name in per_seed:
            lines.append(f"| {labels[name]} | " + " | ".join(fmt([r[m] for r in per_seed[name]]) for m in metrics)
                         + " |")
    plot = result.get("plot")
    if plot and os.path.isfile(plot) and os.path.dirname(os.path.abspath(plot)) != os.path.abspath(out_dir):
        import shutil  # a reused result made for another --out: bring its plot (and JSON) next to this page
        for src in (plot, os.path.join(os.path.dirname(plot), "trace_compare.json")):
            if os.path.isfile(src):
                shutil.copy(src, out_dir)
        plot = os.path.join(out_dir, os.path.basename(plot))
    pngs = [p for p in [plot] if p and os.path.isfile(p)]
    log(f"  trace: {wall:.0f}s")
    return {"table": "\n".join(lines), "pngs": pngs, "per_seed": per_seed, "wall_s": wall}


# ------------------------------------------------------------------------------------------------ page
def findings(sections: dict) -> list[str]:
    """Plain statements read off the numbers (a difference counts only when it exceeds the seed spread)."""
    out = []

    def verdict(d):
        m, s = mean_std(d)
        if not np.isfinite(m):
            return "n/a"
        if len(d) < 2:
            return f"{m:+.3f} (one seed: no spread estimate)"
        size = "within the seed spread" if abs(m) <= s else ("higher" if m > 0 else "lower")
        return f"{m:+.3f} ± {s:.3f} ({size})"

    if "objectives" in sections:
        g = sections["objectives"]["groups"]
        for a, b in sections["objectives"]["pairs"]:
            d = paired(g[a], g[b], lambda r: r["final_accuracy"])
            out.append(f"- {a} vs {b}: final held-out accuracy difference {verdict(d)}.")
    if sections.get("selection", {}).get("groups"):
        s = sections["selection"]
        g, budget = s["groups"], s["budget"]
        eff = {lab: mean_std([r["effective_ratio"] for r in recs])[0] for lab, recs in g.items()}
        out.append("- Effective-batch ratio (mixed groups among trained prompts): "
                   + ", ".join(f"{lab} {v:.2f}" for lab, v in eff.items()) + ".")
        for lab in [m for m in ("DS", "MoPPS", "DPS", "GPS") if m in g]:
            d = paired(g[lab], g["Uniform"], lambda r: accuracy_at_rollouts(r["curve"], budget))
            out.append(f"- {lab} vs Uniform at {budget} rollouts: accuracy difference {verdict(d)}.")
    per_seed = sections.get("trace", {}).get("per_seed")
    if per_seed and {"trace", "grpo_flat"} <= set(per_seed):
        for metric in ("contrast_ratio", "accuracy"):
            d = [a[metric] - b[metric] for a, b in zip(per_seed["trace"], per_seed["grpo_flat"])]
            out.append(f"- TRACE vs flat GRPO at equal tokens: {metric} difference {verdict(d)}.")
    return out


def machine() -> str:
    import jax
    dev = jax.devices()[0]
    return (f"{platform.platform()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"python {platform.python_version()}, jax {jax.__version__} on {dev.platform} ({dev.device_kind})")


def write_page(path: str, sections: dict, *, setting: Setting, seeds, command: str, wall_s: float,
               runs_s: float, smoke: bool, reuse_only: bool = False) -> str:
    out_dir = os.path.dirname(path)
    lines = ["# Reproduced comparisons on the CPU testbed", ""]
    if reuse_only:
        lines += ["**Partial**: this page was assembled (`--reuse-only`) from the runs that had finished; the seeds "
                  "column / 'seeds reaching target' show how many seeds each method has. The command below "
                  "completes the missing runs (finished ones are reused) and rewrites the page.", ""]
    if smoke:
        lines += ["**Smoke setting** (tiny random policy, a couple of steps): these numbers only check the pipeline.",
                  ""]
    lines += ["Regenerate this page (tables and plots) with:", "", "```bash", command, "```", "",
              f"Wall time: {runs_s / 60:.1f} min of training runs in total (sum over runs, TRACE included; a rerun "
              f"reuses finished runs: this invocation took {wall_s / 60:.1f} min) on {machine()}; finished "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. The machine was shared with other jobs "
              f"(1-minute load average at the end: {os.getloadavg()[0]:.1f}), so timings are upper bounds.",
              "",
              f"Setting: {len(seeds)} seeds ({', '.join(map(str, seeds))}); each run {setting.steps} RL steps of "
              f"{setting.batch_prompts} prompts x {setting.group_size} samples "
              f"({setting.max_new_tokens} new tokens max) from the same warm start ({setting.policy}); "
              f"held-out accuracy = avg@{setting.eval_samples} over "
              f"{setting.num_eval or 256} held-out prompts at the eval temperature, measured every "
              f"{setting.eval_every} steps. Tables give mean ± std (ddof 1) over seeds. Everything else is the "
              "default config (lpo_jax/training/config.py): lr 1e-4, 2 mini-batches per step, DPS/MoPPS decay 0.5, "
              "DS up to 4 generation rounds.", ""]
    notes = findings(sections)
    if notes:
        lines += ["## Findings", "", *notes, ""]
    titles = {"objectives": "Objectives at equal rollouts: GRPO vs LPO, Dr.GRPO and MaxRL pairings",
              "selection": "Prompt selection at equal rollouts: Uniform vs DS vs MoPPS vs DPS vs GPS",
              "trace": "Multi-turn tree rollouts: flat GRPO vs random trees vs TRACE"}
    for name in SECTIONS:
        if name not in sections:
            continue
        sec = sections[name]
        lines += [f"## {titles[name]}", "", sec["table"], ""]
        lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, out_dir)})" for p in sec["pngs"]]
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3; smoke 2)")
    ap.add_argument("--trace-seeds", type=int, default=None,
                    help="seeds of the TRACE section (default: --seeds; it is the slowest section)")
    ap.add_argument("--steps", type=int, default=None, help="RL steps per run (default 16; smoke 2)")
    ap.add_argument("--batch-prompts", type=int, default=None, help="prompts per step (default 16)")
    ap.add_argument("--eval-every", type=int, default=None, help="held-out evaluation period in steps (default 2)")
    ap.add_argument("--target", type=float, default=None,
                    help="target accuracy (default: warm start + 80%% of Uniform's gain)")
    ap.add_argument("--methods", default=None,
                    help="comma list of method labels to run (default all; e.g. 'GRPO,LPO-fwd,DPS')")
    ap.add_argument("--reuse-only", action="store_true",
                    help="train nothing: write the page from the runs already finished (others are left out)")
    ap.add_argument("--smoke", action="store_true", help="tiny random policy, 2 steps: checks the pipeline")
    ap.add_argument("--out", default=os.path.join(_ROOT, "docs"), help="where results.md and the PNGs go")
    ap.add_argument("--runs", default=None, help="run directories (default <repo>/runs/reproduce[_smoke])")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    setting = smoke_setting() if args.smoke else Setting()
    changes = {k: v for k, v in (("steps", args.steps), ("batch_prompts", args.batch_prompts),
                                  ("eval_every", args.eval_every)) if v is not None}
    setting = dataclasses.replace(setting, **changes)
    seeds = list(range(args.seeds if args.seeds is not None else (2 if args.smoke else 3)))
    if not seeds or setting.steps < 1:
        ap.error("--seeds and --steps must be >= 1")
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    known = [m[0] for m in OBJECTIVE_METHODS] + [m[0] for m in SELECTION_METHODS]
    if methods and set(methods) - set(known):
        ap.error(f"unknown method(s) {sorted(set(methods) - set(known))}; choose from {known}")
    runs_dir = os.path.abspath(args.runs or os.path.join(_ROOT, "runs", "reproduce_smoke" if args.smoke
                                                          else "reproduce"))
    out_dir = os.path.abspath(args.out)
    os.makedirs(runs_dir, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    t0 = time.time()
    policy = policy_path(setting, runs_dir) if {"objectives", "selection"} & set(sections) else ""
    cache, results = {}, {}
    if "objectives" in sections:
        log("objectives:")
        results["objectives"] = section_objectives(setting, seeds, runs_dir, out_dir, policy, log, cache,
                                                   methods=methods, reuse_only=args.reuse_only)
    if "selection" in sections:
        log("selection:")
        results["selection"] = section_selection(setting, seeds, runs_dir, out_dir, policy, log, cache,
                                                 target=args.target, methods=methods,
                                                 reuse_only=args.reuse_only)
    if "trace" in sections:
        log("trace:")
        trace_seeds = list(range(args.trace_seeds)) if args.trace_seeds else seeds
        results["trace"] = section_trace(trace_seeds, args.smoke, out_dir, log, runs_dir=runs_dir,
                                         reuse_only=args.reuse_only)
    wall = time.time() - t0
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--reuse-only"]
    command = "python experiments/reproduce.py " + " ".join(shown)
    page = write_page(os.path.join(out_dir, "results.md"), results, setting=setting, seeds=seeds,
                      command=command.strip(), wall_s=wall, smoke=args.smoke, reuse_only=args.reuse_only,
                      runs_s=sum(r["wall_s"] for r in cache.values() if r)
                      + results.get("trace", {}).get("wall_s", 0.0))
    log(f"wrote {page} ({wall / 60:.1f} min)")
    return {"page": page, "wall_s": wall, "sections": {k: v["pngs"] for k, v in results.items()}}


if __name__ == "__main__":
    main()
