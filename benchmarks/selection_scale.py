"""DPS and MoPPS select + update over a pool of 1M prompts on CPU (goal: <= 50 ms per step).

JSON figures: candidates = the whole pool (the most demanding setting). A second printed row per method uses
M = candidate_ratio x B candidates (16 x 256 = 4096, MoPPS's MATH setting) over the same 1M-prompt state.
The state is first warmed by `--warm_steps` select/update steps with random outcomes so that counts and
beliefs are non-trivial. Timing: select and update each jitted with the state donated (as a training loop
would; without donation a jitted select copies the whole [N]-state it returns), post warm-up,
block_until_ready, median (and min) over `--reps` steps; one process, same inputs.
Prints one JSON line last: {"benchmark": "selection_scale", "dps_ms": ..., "mopps_ms": ..., plus extra keys}.
MoPPS at 1M runs its exact prior-group fast path (see `lpo_jax.selection.mopps`): its cost grows with the number
of prompts ever selected. Extra keys keep that honest: "mopps_reference_ms" is the full-draw path
(seen_capacity=0; also what runs once more than seen_capacity prompts were selected) and
"mopps_{k}k_seen_ms" the fast path with --late_seen prompts already off the prior (set directly in the state).
The machine this was written on is a shared 2-core box; timings there are noisy (see the min column).
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.selection import make_dps, make_mopps


def mark_seen(state, num_seen, rng):
    """A MoPPS state with `num_seen` random prompts off the prior (alpha + 1), listed as update would."""
    ids = rng.choice(state.alpha_N.shape[0], num_seen, replace=False).astype(np.int32)
    cap = state.seen_ids_C.shape[0]
    return state.replace(alpha_N=state.alpha_N.at[ids].add(1.0), num_seen=jnp.int32(num_seen),
                         seen_ids_C=state.seen_ids_C.at[:min(cap, num_seen)].set(ids[:cap]))


def time_steps(selector, num_prompts, batch_size, n, reps, warm_steps, num_candidates=None, seed=0, prepare=None):
    key = jax.random.key(seed)
    rng = np.random.default_rng(seed)
    if num_candidates is None:
        candidates = jnp.arange(num_prompts, dtype=jnp.int32)
    else:  # a fixed random candidate subset (the papers draw candidate_ratio x B per step from the loader)
        candidates = jnp.asarray(np.sort(rng.choice(num_prompts, num_candidates, replace=False)), jnp.int32)
    select = jax.jit(selector.select, donate_argnums=0)  # state passes through: donate, else it is copied
    update = jax.jit(selector.update, static_argnums=3, donate_argnums=0)
    state = selector.init(key)
    if prepare is not None:
        state = prepare(state, rng)
    times = []
    for r in range(warm_steps + reps):
        successes = jnp.asarray(rng.integers(0, n + 1, size=batch_size), jnp.int32)
        k = jax.random.fold_in(key, r)
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        state, ids, _ = select(state, candidates, k)
        state = update(state, ids, successes, n)
        jax.block_until_ready(state)
        if r >= warm_steps:
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.min(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num_prompts", type=int, default=1_000_000)
    ap.add_argument("--batch_size", type=int, default=256)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warm_steps", type=int, default=20)
    ap.add_argument("--candidate_ratio", type=int, default=16, help="second row: M = ratio x B candidates")
    ap.add_argument("--late_seen", type=int, default=200_000, help="MoPPS row with this many prompts already seen")
    args = ap.parse_args()
    N, B = args.num_prompts, args.batch_size
    out = {}
    late = f"mopps_{args.late_seen // 1000}k_seen"
    rows = [("dps", make_dps(N, B, decay=0.7), (None, args.candidate_ratio * B), None),
            ("mopps", make_mopps(N, B, decay=1.0), (None, args.candidate_ratio * B), None),
            (late, make_mopps(N, B, decay=1.0), (None,), lambda st, rng: mark_seen(st, args.late_seen, rng)),
            ("mopps_reference", make_mopps(N, B, decay=1.0, seen_capacity=0), (None,), None)]
    for name, sel, cands, prepare in rows:
        for m in cands:
            med, best = time_steps(sel, N, B, args.n, args.reps, args.warm_steps, num_candidates=m, prepare=prepare)
            if m is None:
                out[name + "_ms"] = round(med, 2)
            print(f"{name}: select+update median {med:.1f} ms, min {best:.1f} ms over {args.reps} steps "
                  f"(N={N}, B={B}, candidates={'N' if m is None else m}, device={jax.devices()[0].device_kind})",
                  flush=True)
    print(json.dumps({"benchmark": "selection_scale", **out}))


if __name__ == "__main__":
    main()
