"""Train-step throughput and model FLOP utilisation against this machine's measured matmul peak.

Runs the real jitted train step (LPO-fwd loss, AdamW, grad clip, non-finite guard) of a ~10M-parameter
Qwen3-style decoder on random tokens, and in the same process measures the dense-matmul peak with a large jitted
matmul of the same dtype. MFU = model FLOPs per step / step time / peak, with model FLOPs = 6 * (matmul params) *
tokens + attention (12 * layers * heads * head_dim * T * tokens / 2 for the causal half).

    python benchmarks/train_step.py                       # CPU default (~10M params, batch 16 x 256)
    python benchmarks/train_step.py --preset qwen3-1.7b --batch 8 --seq 2048 --dtype bfloat16   # GPU

Prints one JSON line last: {"benchmark": "train_step", "tokens_per_s", "mfu", "peak_gflops", ...}.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from lpo_jax.models import ModelConfig, Transformer  # noqa: E402
from lpo_jax.objectives import get_objective  # noqa: E402
from lpo_jax.training.state import init_train_state, make_optimizer, split_model  # noqa: E402
from lpo_jax.training.step import TrainBatch, make_train_step  # noqa: E402

PRESETS = {
    "cpu-10m": dict(family="qwen3", vocab_size=8192, hidden_size=256, intermediate_size=768, num_layers=10,
                    num_heads=4, num_kv_heads=2, head_dim=64, qk_norm=True, tie_embeddings=True),
    "qwen3-1.7b": dict(family="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_layers=28,
                       num_heads=16, num_kv_heads=8, head_dim=128, qk_norm=True, tie_embeddings=True),
}


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_peak(dtype, n):
    """A function that times one large jitted matmul and returns its GFLOP/s (the machine's dense peak)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, b))
    return lambda: 2 * n ** 3 / median_time(lambda: f(a, b), 1) / 1e9


def model_flops_per_step(cfg: ModelConfig, batch: int, seq: int, completion: int) -> float:
    """Forward + backward FLOPs the step needs: layers over every token, the output projection over the
    completion tokens only (RL log-probs never need prompt logits), causal attention counted by halves."""
    d, L = cfg.hidden_size, cfg.num_layers
    attn_params = d * cfg.num_heads * cfg.head_dim * 2 + d * cfg.num_kv_heads * cfg.head_dim * 2
    layer_params = L * (attn_params + 3 * d * cfg.intermediate_size)
    tokens = batch * seq
    attention = 12 * L * cfg.num_heads * cfg.head_dim * seq * tokens / 2
    return 6 * layer_params * tokens + 6 * cfg.vocab_size * d * batch * completion + attention


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="cpu-10m", choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=16, help="sequences per step (B*K)")
    p.add_argument("--group", type=int, default=8, help="K samples per prompt")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--dtype", default="float32", help="compute dtype (params stay float32)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-n", type=int, default=2048)
    p.add_argument("--peak-gflops", type=float, default=0.0,
                   help="use this peak (e.g. the card's nominal bf16 peak) instead of the measured matmul peak")
    args = p.parse_args()

    cfg = ModelConfig(**PRESETS[args.preset], dtype=args.dtype)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    graphdef, params = split_model(model)
    objective = get_objective("lpo_fwd")
    optimizer = make_optimizer(lr=1e-5, grad_clip=1.0)
    state = init_train_state(params, optimizer, jax.random.PRNGKey(0))
    loss = lambda *a, **k: objective.loss(*a, cfg=objective.config, **k)
    step = jax.jit(make_train_step(graphdef, loss, optimizer, prompt_len=args.prompt), donate_argnums=0)

    B, K, L, T = args.batch // args.group, args.group, args.seq, args.seq - args.prompt
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, cfg.vocab_size, (B, K, L)), jnp.int32)
    ones = jnp.ones((B, K, L), jnp.int32)
    mask = jnp.ones((B, K, T), jnp.float32)
    old = jnp.asarray(-rng.exponential(2.0, (B, K, T)), jnp.float32)
    rewards = jnp.asarray(rng.integers(0, 2, (B, K)), jnp.float32)
    targets = objective.prepare(rewards, mask, objective.config)
    batch = TrainBatch(tokens, ones, mask, old, None, targets)

    t = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - t

    def run_once():
        nonlocal state
        state, m = step(state, batch)
        return m["loss"]

    # interleaved, so a shared machine's load shifts both the step and the peak alike; medians of each
    step_times, peaks, peak_once = [], [], matmul_peak(jnp.dtype(args.dtype), args.peak_n)
    for _ in range(args.repeats):
        step_times.append(median_time(run_once, 1))
        peaks.append(peak_once())
    step_s, measured_peak = float(np.median(step_times)), float(np.median(peaks))
    peak = args.peak_gflops or measured_peak
    flops = model_flops_per_step(cfg, args.batch, args.seq, T)
    achieved = flops / step_s / 1e9
    print(json.dumps({"benchmark": "train_step", "tokens_per_s": round(args.batch * args.seq / step_s, 1),
                      "mfu": round(achieved / peak, 4), "peak_gflops": round(peak, 1),
                      "measured_matmul_gflops": round(measured_peak, 1),
                      "achieved_gflops": round(achieved, 1), "step_s": round(step_s, 4),
                      "compile_s": round(compile_s, 2), "params_m": round(n_params / 1e6, 2),
                      "preset": args.preset, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
                      "device": jax.devices()[0].device_kind, "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
