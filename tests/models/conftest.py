"""Fixtures for the models tests: tiny random HF checkpoints built with transformers + torch on CPU, saved
in several formats (fp32 / bf16, single / sharded safetensors), with transformers' reference logits."""
import os

import pytest

from models_testlib import HF_FAMILIES, HF_FORMATS, hf_config, parity_batch, torch_logits


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{(family, format): (directory, reference logits [B, T, V] from transformers on that checkpoint)}."""
    import torch
    import transformers as T

    tokens, mask = parity_batch()
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for i, family in enumerate(HF_FAMILIES):
        torch.manual_seed(i)
        model = T.AutoModelForCausalLM.from_config(hf_config(family)).eval()
        with torch.no_grad():   # non-trivial norms and biases, so a wrong mapping cannot pass
            for name, p in model.named_parameters():
                if "norm" in name or "bias" in name:
                    p.add_(0.2 * torch.randn_like(p))
        for fmt in HF_FORMATS:
            path = os.path.join(root, f"{family}_{fmt}")
            if fmt.startswith("bf16"):
                model.to(torch.bfloat16).save_pretrained(path, max_shard_size="40KB")
                model.to(torch.float32)
                ref_model = T.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            else:
                model.save_pretrained(path, max_shard_size="40KB" if "sharded" in fmt else "1GB")
                ref_model = model
            out[(family, fmt)] = (path, torch_logits(ref_model, tokens, mask))
    return out


