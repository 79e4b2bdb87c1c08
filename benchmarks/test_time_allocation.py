"""GPS test-time compute allocation on the simulator (spec §6 Eq. 22-23; the setting of colab/02_selection.ipynb).

Per seed: train GPS (module defaults) on a simulated pool for `steps` RL steps, then allocate a budget of
4 samples per held-out prompt (never trained; 1 to 16 per prompt) and score each allocation by the expected
fraction of held-out prompts solved (pass@n under the simulator's true success rates):
  uniform  4 samples each;
  gps      allocate_test_samples on GPS's calibrated predictive (`predictive`: logit-normal around Eq. 10,
           fitted on the run's own predict-then-observe pairs; test_time module docstring);
  gps_uncalibrated  on the point prediction of Eq. 10 (`predict`), as the spec sketches (printed, not in JSON);
  oracle   on the true success rates.
Means over seeds; the last line is one JSON object {"benchmark", "uniform", "gps", "oracle", "ratio"} with
ratio = gps / uniform.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.selection import SimConfig, make_simulator, true_success
from lpo_jax.selection import gps as gps_lib
from lpo_jax.selection.harness import make_runner
from lpo_jax.selection.test_time import allocate_test_samples, expected_solved


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num_prompts", type=int, default=4000)
    ap.add_argument("--batch_size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per_prompt", type=int, default=4, help="budget = per_prompt x held-out prompts")
    ap.add_argument("--gps", default="{}", help="JSON dict of GPS hyperparameter overrides")
    args = ap.parse_args()
    limits = dict(min_per_prompt=1, max_per_prompt=16)
    rows = []
    for seed in range(args.seeds):
        t0 = time.time()
        sim = make_simulator(SimConfig(num_prompts=args.num_prompts), jax.random.key(seed))
        gps = gps_lib.build_gps(np.asarray(sim.embeddings_ND), batch_size=args.batch_size, n_rollouts=args.k,
                                **json.loads(args.gps))
        run = make_runner(gps.selector, num_steps=args.steps, batch_size=args.batch_size, n=args.k,
                          probe_heldout=False)
        _, state, sim = run(sim, jax.random.key(seed + 1))
        heldout = sim.heldout_ids
        gamma = jnp.asarray(true_success(sim))[heldout]
        emb, key = sim.embeddings_ND[heldout], jax.random.key(seed + 7)
        budget = args.per_prompt * len(heldout)
        pred = gps.predict(state, emb, key)
        nodes, weights = gps.predictive(state, emb, key)
        alloc = {
            "uniform": jnp.full((len(heldout),), args.per_prompt, jnp.int32),
            "gps": allocate_test_samples(nodes, budget, weights_S=weights, **limits),
            "gps_uncalibrated": allocate_test_samples(pred, budget, **limits),
            "oracle": allocate_test_samples(gamma, budget, **limits),
        }
        row = {k: float(expected_solved(gamma, v)) / len(heldout) for k, v in alloc.items()}
        cal = gps.calibration(state)
        row["predicted_gps"] = float(expected_solved(nodes, alloc["gps"], weights)) / len(heldout)
        rows.append(row)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items())
              + f"; calibration scale {float(cal.scale):.3f} bias {float(cal.bias):.3f} sd {float(cal.sd):.3f} "
              f"on {int(cal.num_observations)} pairs ({time.time() - t0:.0f}s, {jax.devices()[0].device_kind})",
              flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print("mean over seeds: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items())
          + " (predicted_gps: the fraction the calibrated predictive expects for its own allocation)", flush=True)
    print(json.dumps({"benchmark": "test_time_allocation", "uniform": round(mean["uniform"], 4),
                      "gps": round(mean["gps"], 4), "oracle": round(mean["oracle"], 4),
                      "ratio": round(mean["gps"] / mean["uniform"], 4)}))


if __name__ == "__main__":
    main()
