"""Paper setting (LPO spec §7, selection spec §5): Countdown-34 with Qwen3-4B-Base, on GPUs/TPUs.

    python experiments/train.py --config configs/countdown_qwen3_4b.py:lpo_fwd,dps \
        --config.model.path=/ckpt/Qwen3-4B-Base --config.task.train_path=/data/countdown34_train.jsonl \
        --config.task.eval_path=/data/countdown34_test.jsonl
Objective (grpo | lpo_fwd | lpo_rev | ...) and selector (uniform | ds | dps | gps | mopps) from the config string.
Needs a local HF checkpoint and local data files (records with `target` and `nums`); nothing is downloaded.
"""
from lpo_jax.training.config import base_config


def get_config(spec: str = "lpo_fwd,dps"):
    objective, selector = (part.strip() for part in spec.split(","))
    c = base_config()
    c.run_name = f"countdown_qwen3_4b_{objective}_{selector}"
    c.steps = 130
    c.model.source = "hf"
    c.model.path = "/path/to/Qwen3-4B-Base"
    c.model.dtype = "bfloat16"
    c.task.name = "countdown"
    c.task.train_path = "/path/to/countdown34_train.jsonl"
    c.task.num_train = 2000
    c.task.num_eval = 512
    c.task.max_prompt_len = 256
    c.rollout.batch_prompts = 128     # LPO paper: 128 prompts / 64 per mini-batch (2 updates per batch)
    c.rollout.group_size = 8
    c.rollout.max_new_tokens = 1024
    c.objective.name = objective
    c.selector.name = selector
    c.selector.decay = 0.5            # DPS/MoPPS Countdown setting
    c.selector.max_gen_rounds = 10    # DAPO dynamic sampling, Countdown setting
    c.optim.lr = 1e-6
    c.optim.weight_decay = 0.1
    c.train.mini_batches = 2
    c.train.micro_batches = 8
    c.train.logits_chunk = 512        # 152k-vocab logits 512 positions at a time (memory)
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.eval.every = 10
    c.eval.num_samples = 8
    c.checkpoint.every = 10
    return c
