"""Paper setting (LPO spec §7): MATH (MATH-lighteval, 7.5k) with Qwen3-1.7B-Base or Qwen3-8B-Base.

    python experiments/train.py --config configs/math_qwen3.py:1.7b,lpo_fwd,dps \
        --config.model.path=/ckpt/Qwen3-1.7B-Base --config.task.train_path=/data/math_train.parquet \
        --config.task.eval_path=/data/math500.jsonl
Size (1.7b | 8b), objective and selector from the config string. Needs local checkpoint and data files.
"""
from lpo_jax.training.config import base_config


def get_config(spec: str = "1.7b,lpo_fwd,dps"):
    size, objective, selector = (part.strip() for part in spec.split(","))
    if size not in ("1.7b", "8b"):
        raise ValueError(f"model size must be 1.7b or 8b, got {size!r}")
    c = base_config()
    c.run_name = f"math_qwen3_{size}_{objective}_{selector}"
    c.steps = 600 if size == "1.7b" else 450
    c.model.source = "hf"
    c.model.path = f"/path/to/Qwen3-{size.upper()}-Base"
    c.model.dtype = "bfloat16"
    c.task.name = "math"
    c.task.train_path = "/path/to/math_train.parquet"
    c.task.max_prompt_len = 1024
    c.task.prompt_overflow = "truncate"
    c.rollout.batch_prompts = 256     # LPO paper: 256 prompts / 128 per mini-batch
    c.rollout.group_size = 8
    c.rollout.max_new_tokens = 4096
    c.objective.name = objective
    c.selector.name = selector
    c.selector.decay = 0.7            # DPS MATH setting
    c.selector.max_gen_rounds = 4
    c.optim.lr = 1e-6
    c.optim.weight_decay = 0.1
    c.train.mini_batches = 2
    c.train.micro_batches = 32
    c.train.logits_chunk = 512        # 152k-vocab logits 512 positions at a time (memory)
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.eval.every = 20
    c.eval.num_samples = 4
    c.checkpoint.every = 20
    return c
