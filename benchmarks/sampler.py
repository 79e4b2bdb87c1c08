"""Sampler throughput: lpo_jax Sampler vs transformers `generate` (PyTorch) on the same weights.

Default (CPU claim): tiny Qwen3-style model (4 layers, hidden 256, 4 heads, 2 KV heads, head_dim 64,
intermediate 1024, tied embeddings, vocab 8192), prompt 64, 128 new tokens, sampling at temperature 1 over
the full vocabulary (no top-k/top-p on either side), EOS suppressed on both sides so both generate exactly
128 tokens per row. Batch 32 is the headline; batches 1 and 128 are also reported. Both sides run in one
process on the same random prompts; medians over --repeats runs; our compile time is reported separately
(trace + lowering + XLA compile time of the first call). tokens/s counts generated tokens only (batch * new
tokens / wall time of the whole generate call, prefill included, on both sides). The machine's 1-minute load
average is recorded: on a shared CPU, torch's OpenMP threads degrade far more than XLA under contention,
so compare numbers taken on an idle machine (or pass --torch-threads 1).

GPU check (the lead's): e.g. `--preset qwen3-1.7b --no-hf --batch 64 --peak-gbs 3350` (random bf16
weights): also reports decode-only tokens/s and an HBM bandwidth fraction estimate = bytes read per decode
step (all params + the whole KV cache, which our attention reads every step) * decode steps/s / peak.

Prints one JSON line last:
{"benchmark": "sampler", "ours_tok_s", "hf_tok_s", "ratio", "compile_s", "by_batch": {...}, ...}
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def _devices_flag(argv) -> int:
    """--devices N must act before JAX starts: N host devices, generation data-parallel over them."""
    for i, arg in enumerate(argv):
        if arg.startswith("--devices"):
            return int(arg.split("=", 1)[1] if "=" in arg else argv[i + 1])
    return 1


if _devices_flag(sys.argv) > 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={_devices_flag(sys.argv)}")

import jax
import numpy as np

from lpo_jax.models import ModelConfig, create_model, save_hf
from lpo_jax.sampling import Sampler, SamplingConfig

PRESETS = {
    "tiny": dict(family="qwen3", vocab_size=8192, hidden_size=256, intermediate_size=1024, num_layers=4,
                 num_heads=4, num_kv_heads=2, head_dim=64, qk_norm=True, tie_embeddings=True,
                 rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=4096),
    "qwen3-1.7b": dict(family="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                       num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128, qk_norm=True,
                       tie_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=40960,
                       param_dtype="bfloat16", dtype="bfloat16"),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--batch", type=int, default=32, help="headline batch size")
    p.add_argument("--by-batch", default="1,32,128", help="comma-separated batch sizes to report ('' = none)")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-hf", action="store_true", help="skip transformers (e.g. big presets on GPU)")
    p.add_argument("--peak-gbs", type=float, default=None, help="peak memory bandwidth GB/s for the estimate")
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, default=1,
                   help="CPU: split the host into N XLA devices and generate data-parallel over them (one XLA "
                        "device runs a decode step's small matmuls on one core; torch uses its threads)")
    return p.parse_args()


_cpu_seconds = {}


def _median_time(fn, repeats, tag=None):
    """Median wall seconds of fn(); with `tag`, also records the median process CPU seconds."""
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if tag:
        _cpu_seconds[tag] = statistics.median(cpu)
    return statistics.median(times)


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]


def _on_duration(event, duration, **_):
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def bench_ours(sampler, prompts, cfg, repeats):
    """(tokens/s end to end, compile seconds (trace + lower + XLA compile of the first call), decode-only
    tokens/s, decode steps/s)."""
    b, n = prompts.shape[0], cfg.max_new_tokens
    rows = -(-b // sampler.data_parallel_size) * sampler.data_parallel_size   # filler rows: inactive
    prompts_rows = np.concatenate([prompts, prompts[: rows - b]]) if rows > b else prompts
    mask, active = np.ones_like(prompts_rows, bool), np.arange(rows) < b
    run = lambda key: jax.block_until_ready(sampler.generate_arrays(prompts_rows, mask, key, cfg, active_N=active))
    before = _compile_seconds[0]
    out = run(0)
    compile_s = _compile_seconds[0] - before
    assert int(np.asarray(out.lengths)[:b].min()) == n, "every row must generate max_new_tokens"
    wall = _median_time(lambda: run(1), repeats, tag="ours")
    # decode only: prefill through the step-wise API, then time the decode loop alone
    st, _, _ = sampler.start([list(p) for p in prompts_rows], prompts.shape[1] + n)
    sampler.decode(st, 0, cfg)                                     # compile
    times = []
    for r in range(repeats):
        st, _, _ = sampler.start([list(p) for p in prompts_rows], prompts.shape[1] + n)
        jax.block_until_ready(st)
        t = time.perf_counter()
        sampler.decode(st, r, cfg)
        times.append(time.perf_counter() - t)
    dec = statistics.median(times)
    return b * n / wall, compile_s, b * n / dec, n / dec


def bench_hf(hf_model, prompts, new_tokens, repeats):
    import torch

    x = torch.as_tensor(prompts, dtype=torch.long)
    kwargs = dict(attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)

    def run():
        with torch.no_grad():
            out = hf_model.generate(x, **kwargs)
        assert out.shape[1] == x.shape[1] + new_tokens

    run()                                                          # warm-up
    return prompts.shape[0] * new_tokens / _median_time(run, repeats, tag="hf")


def bytes_per_decode_step(cfg: ModelConfig, batch: int, cache_len: int) -> int:
    param_bytes = cfg.num_params() * np.dtype(jax.numpy.dtype(cfg.param_dtype)).itemsize
    kv_bytes = 2 * cfg.num_layers * batch * cache_len * cfg.num_kv_heads * cfg.head_dim * \
        np.dtype(jax.numpy.dtype(cfg.dtype)).itemsize
    return param_bytes + kv_bytes


def main():
    args = parse_args()
    cfg = ModelConfig(**PRESETS[args.preset])
    mesh = None
    if args.devices > 1:
        from lpo_jax.training.mesh import make_mesh
        mesh = make_mesh(data=args.devices, fsdp=1, tensor=1)
    model = create_model(cfg, seed=args.seed, mesh=mesh)
    sampler = Sampler(model, mesh=mesh)
    scfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0)   # no EOS ids: never stops early
    hf_model = None
    if not args.no_hf:
        import torch
        from transformers import AutoModelForCausalLM

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        tmp = tempfile.mkdtemp(prefix="bench_sampler_")
        save_hf(model, tmp)
        hf_model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        hf_model.generation_config.eos_token_id = None               # EOS suppressed: equal work
        print(f"torch threads: {torch.get_num_threads()}", flush=True)
    print(f"device: {jax.devices()[0].device_kind}, preset {args.preset}, {cfg.num_params() / 1e6:.1f}M params",
          flush=True)

    rng = np.random.default_rng(args.seed)
    batches = sorted({args.batch} | {int(b) for b in args.by_batch.split(",") if b.strip()})
    by_batch, headline = {}, None
    for b in batches:
        prompts = rng.integers(1, cfg.vocab_size, size=(b, args.prompt_len)).astype(np.int32)
        reps = args.repeats if b == args.batch else max(1, args.repeats // 2)
        ours, compile_s, dec_tok_s, steps_s = bench_ours(sampler, prompts, scfg, reps)
        row = {"ours_tok_s": round(ours, 1), "ours_decode_tok_s": round(dec_tok_s, 1),
               "compile_s": round(compile_s, 2),
               "ours_tok_per_cpu_s": round(b * args.new_tokens / _cpu_seconds["ours"], 1)}
        if args.peak_gbs:
            gbs = bytes_per_decode_step(cfg, b, args.prompt_len + args.new_tokens) * steps_s / 1e9
            row.update(achieved_gbs=round(gbs, 1), hbm_fraction=round(gbs / args.peak_gbs, 3))
        if hf_model is not None:
            hf = bench_hf(hf_model, prompts, args.new_tokens, reps)
            row.update(hf_tok_s=round(hf, 1), ratio=round(ours / hf, 2),
                       hf_tok_per_cpu_s=round(b * args.new_tokens / _cpu_seconds["hf"], 1))
        print(f"batch {b}: {row}", flush=True)
        by_batch[str(b)] = row
        if b == args.batch:
            headline = row
    result = {"benchmark": "sampler", "preset": args.preset, "device": jax.devices()[0].device_kind,
              "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
              "ours_tok_s": headline["ours_tok_s"], "hf_tok_s": headline.get("hf_tok_s"),
              "ratio": headline.get("ratio"), "compile_s": headline["compile_s"], "by_batch": by_batch,
              "devices": args.devices, "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    if hf_model is not None:
        import torch
        result["torch_threads"] = torch.get_num_threads()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
