"""SFT warm start of the CPU-testbed policy (cached: paid once per settings).

    python experiments/sft.py                       # default settings (what configs/default.py uses)
    python experiments/sft.py --seed 1 --steps 300  # other settings -> another cache entry
    python experiments/sft.py --force               # retrain even if cached

Prints one JSON line: the policy directory, SFT seconds and the measured spread (fraction of
training prompts whose sampled success rate lies strictly inside (0.1, 0.9)), held-out accuracy.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpo_jax.tasks.testbed_policy import TestbedPolicyConfig, ensure_testbed_policy, read_report  # noqa: E402

_SCALARS = [f for f in dataclasses.fields(TestbedPolicyConfig) if f.name != "task"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TestbedPolicyConfig()
    for f in _SCALARS:
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, f.name)), default=None,
                            help=f"(default {getattr(defaults, f.name)})")
    parser.add_argument("--levels", type=str, default=None, help="list lengths, e.g. 3,4,5,6,7,8")
    parser.add_argument("--ops", type=str, default=None, help="sort,rsort or a subset")
    parser.add_argument("--n-train", type=int, default=None, help="training prompts")
    parser.add_argument("--n-heldout", type=int, default=None, help="held-out prompts")
    parser.add_argument("--cache-dir", type=str, default=None, help="default ~/.cache/lpo_jax/testbed_sft")
    parser.add_argument("--force", action="store_true", help="retrain even when a cached policy exists")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    changes = {f.name: getattr(args, f.name) for f in _SCALARS if getattr(args, f.name) is not None}
    cfg = TestbedPolicyConfig(**changes)
    task = {}
    if args.levels:
        task["levels"] = tuple(int(x) for x in args.levels.split(","))
    if args.ops:
        task["ops"] = tuple(args.ops.split(","))
    if args.n_train is not None:
        task["n_train"] = args.n_train
    if args.n_heldout is not None:
        task["n_heldout"] = args.n_heldout
    if task:
        cfg = cfg.replace(task=dataclasses.replace(cfg.task, **task))
    start = time.time()
    log = None if args.quiet else (lambda msg: print(f"[{time.time() - start:6.1f}s] {msg}", file=sys.stderr, flush=True))
    path, trained = ensure_testbed_policy(cfg, cache_dir=args.cache_dir, force=args.force, log=log)
    report = read_report(path)
    line = {
        "path": path,
        "cached": not trained,
        "sft_s": round(report["sft_s"], 1),
        "measure_s": round(report["measure_s"], 1),
        "wall_s": round(time.time() - start, 1),
        "spread": report["spread"],
        "train_accuracy": round(report["train_accuracy"], 4),
        "heldout_accuracy": round(report["heldout_accuracy"], 4),
        "heldout_greedy_accuracy": round(report["heldout_greedy_accuracy"], 4),
        "frac_all_correct": report["frac_all_correct"],
        "frac_all_wrong": report["frac_all_wrong"],
        "num_params": report["num_params"],
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
