"""Benchmark: loss + gradient time of LPO-fwd / LPO-rev vs GRPO on the same batch (CPU by default).

B = 64 prompts, K = 8 responses, T = 512 tokens, random log-probs and lengths; each objective is one jitted
value_and_grad w.r.t. the token log-probs (metrics included). Runs are interleaved (GRPO, fwd, rev, GRPO,
...) so machine noise hits all three alike; medians are reported. Goal: ratio <= 1.05. Prints one JSON line
last.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.objectives import get_objective


def make_batch(B, K, T, seed=0):
    rng = np.random.default_rng(seed)
    old = -np.abs(rng.normal(1.0, 1.0, (B, K, T))).astype(np.float32)
    logp = (old + 0.05 * rng.normal(size=(B, K, T))).astype(np.float32)
    lengths = rng.integers(1, T + 1, (B, K))
    mask = (np.arange(T)[None, None, :] < lengths[..., None]).astype(np.float32)
    rewards = rng.integers(0, 2, (B, K)).astype(np.float32)
    return jnp.asarray(logp), jnp.asarray(old), jnp.asarray(mask), jnp.asarray(rewards)


def build(name, old, mask, rewards):
    obj = get_objective(name)
    targets = obj.prepare(rewards, mask, obj.config)

    @jax.jit
    def step(logp):
        (value, metrics), grad = jax.value_and_grad(obj.loss, has_aux=True)(logp, old, mask, targets, obj.config)
        return value, metrics, grad

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--B", type=int, default=64)
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--T", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    logp, old, mask, rewards = make_batch(args.B, args.K, args.T)
    names = ("grpo", "lpo_fwd", "lpo_rev")
    steps = {name: build(name, old, mask, rewards) for name in names}
    for step in steps.values():  # compile + warm up
        for _ in range(3):
            jax.block_until_ready(step(logp))
    times = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            jax.block_until_ready(steps[name](logp))
            times[name].append(time.perf_counter() - start)
    med = {name: float(np.median(t)) for name, t in times.items()}
    print(f"device {jax.devices()[0].platform}, B={args.B} K={args.K} T={args.T}, {args.repeats} interleaved runs")
    for name in names:
        print(f"{name:8s} median {med[name] * 1e3:8.2f} ms  (min {min(times[name]) * 1e3:.2f} ms)")
    print(json.dumps({"benchmark": "objectives", "grpo_s": med["grpo"], "lpo_fwd_s": med["lpo_fwd"],
                      "lpo_rev_s": med["lpo_rev"], "ratio_fwd": med["lpo_fwd"] / med["grpo"],
                      "ratio_rev": med["lpo_rev"] / med["grpo"]}))


if __name__ == "__main__":
    main()
