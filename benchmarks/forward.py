"""Prefill throughput: our jitted forward vs transformers' forward (torch, no_grad) on the same weights.

Tiny Qwen3 (4 layers, hidden 256, 4 heads / 2 KV heads, head_dim 64, MLP 768, vocab 8192), batch 16 x 256
tokens, CPU, fp32. Our model is initialised, written with save_hf and read by
transformers.AutoModelForCausalLM.from_pretrained, so both sides run identical weights (checked: max |logit
difference| is printed). Both produce the full [B, T, V] fp32 logits. Runs alternate between the two sides
and the medians are reported. Last line: one JSON object.

usage: python benchmarks/forward.py [--repeats 7] [--batch 16] [--seq 256]
"""
import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    args = parser.parse_args()

    import flax.nnx as nnx
    import jax
    import numpy as np
    import torch
    import transformers

    from lpo_jax.models import ModelConfig, create_model, forward, save_hf

    cfg = ModelConfig(family="qwen3", vocab_size=8192, hidden_size=256, intermediate_size=768, num_layers=4,
                      num_heads=4, num_kv_heads=2, head_dim=64, qk_norm=True, rope_theta=1e6,
                      max_position_embeddings=4096)
    model = create_model(cfg, seed=0)
    graphdef, state = nnx.split(model)
    with tempfile.TemporaryDirectory() as path:
        save_hf(model, path)
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (args.batch, args.seq)).astype(np.int32)
    mask = np.ones_like(tokens)
    tokens_t, mask_t = torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)
    ours_fn = jax.jit(lambda s, t, m: forward(graphdef, s, t, m))
    tokens_j, mask_j = jax.device_put(tokens), jax.device_put(mask)

    def run_ours():
        return ours_fn(state, tokens_j, mask_j).block_until_ready()

    def run_hf():
        with torch.no_grad():
            return hf_model(input_ids=tokens_t, attention_mask=mask_t).logits

    ours_logits, hf_logits = np.asarray(run_ours()), run_hf().numpy()   # warm-up (compile) + check
    print(f"max |ours - transformers| logits: {np.abs(ours_logits - hf_logits).max():.2e}")
    del ours_logits, hf_logits
    times = {"ours": [], "hf": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("hf", run_hf)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    n_tokens = args.batch * args.seq
    ours = n_tokens / statistics.median(times["ours"])
    hf = n_tokens / statistics.median(times["hf"])
    print(f"jax {jax.__version__} ({jax.device_count()} {jax.default_backend()} devices), torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads); seconds per forward: "
          f"ours {[round(t, 3) for t in times['ours']]}, transformers {[round(t, 3) for t in times['hf']]}")
    print(json.dumps({"benchmark": "forward", "ours_tok_s": round(ours, 1), "hf_tok_s": round(hf, 1),
                      "ratio": round(ours / hf, 3)}))


if __name__ == "__main__":
    main()
