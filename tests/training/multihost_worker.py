"""One process of a multi-host training run on CPU (gloo collectives); driven by test_multihost.py.

    python multihost_worker.py <process_id> <num_processes> <port> <devices> <policy_dir> <out_dir>

num_processes == 1 runs the same global configuration in a single process (the reference).
"""
import json
import os
import sys

pid, nproc, port, devices = (int(a) for a in sys.argv[1:5])
policy_dir, out_dir = sys.argv[5:7]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)

import numpy as np  # noqa: E402

from lpo_jax import hosts  # noqa: E402
from lpo_jax.training import loop  # noqa: E402
from lpo_jax.training.config import base_config, validate  # noqa: E402

c = base_config()
c.output_dir, c.run_name = out_dir, "run"
c.model.source, c.model.path = "hf", policy_dir
c.task.num_train, c.task.num_eval, c.task.max_prompt_len = 48, 8, 16
c.rollout.batch_prompts, c.rollout.group_size, c.rollout.max_new_tokens = 8, 4, 6
c.steps, c.eval.every, c.eval.num_samples = 2, 0, 2
c.train.mini_batches = int(sys.argv[8]) if len(sys.argv) > 8 else 1
c.checkpoint.every, c.checkpoint.export_hf = 1, True
c.log.progress, c.log.tensorboard = False, False
c.optim.lr = 1e-2
c.selector.name = sys.argv[7] if len(sys.argv) > 7 else "dps"
c.compilation_cache = ""
result = loop.run(validate(c))
params = hosts.gather_tree(result.state.params)
flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
np.savez(os.path.join(out_dir, f"params_{pid}.npz"), **flat)
with open(os.path.join(out_dir, f"summary_{pid}.json"), "w") as f:
    json.dump({**result.summary, "process_count": jax.process_count(), "device_count": jax.device_count()}, f)
