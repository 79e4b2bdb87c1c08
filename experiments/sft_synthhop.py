"""SFT warm start of the SynthHop testbed policy (cached: paid once per settings).

    python experiments/sft_synthhop.py                 # default settings (what the TRACE testbed uses)
    python experiments/sft_synthhop.py --steps 600     # other settings -> another cache entry
    python experiments/sft_synthhop.py --force         # retrain even if cached

Prints one JSON line: the policy directory, SFT seconds, the spread (fraction of training questions whose
sampled success rate lies strictly inside (0.1, 0.9)), accuracy by hop count, held-out accuracy and the
prefix-promise figures (success of continuations after a correct vs a wrong first hop).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpo_jax.tasks.synthhop_policy import SynthHopPolicyConfig, ensure_synthhop_policy, read_report  # noqa: E402

_SCALARS = [f for f in dataclasses.fields(SynthHopPolicyConfig) if f.name not in ("env", "demo")]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = SynthHopPolicyConfig()
    for f in _SCALARS:
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)), default=None,
                            help=f"(default {getattr(defaults, f.name)})")
    parser.add_argument("--cache-dir", type=str, default=None, help="default ~/.cache/lpo_jax/synthhop_sft")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cfg = SynthHopPolicyConfig(**{f.name: getattr(args, f.name) for f in _SCALARS if getattr(args, f.name) is not None})
    start = time.time()
    log = None if args.quiet else (lambda m: print(f"[{time.time() - start:6.1f}s] {m}", file=sys.stderr, flush=True))
    path, trained = ensure_synthhop_policy(cfg, cache_dir=args.cache_dir, force=args.force, log=log)
    report = read_report(path)
    keys = ("sft_s", "measure_s", "spread", "train_accuracy", "heldout_accuracy", "train_success_by_hops",
            "frac_all_correct", "frac_all_wrong", "prefix_value_std", "prefix_success_after_correct_hop1",
            "prefix_success_after_wrong_hop1", "num_params", "vocab_size")
    line = {"path": path, "cached": not trained, "wall_s": round(time.time() - start, 1),
            **{k: report[k] for k in keys if k in report}}
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
