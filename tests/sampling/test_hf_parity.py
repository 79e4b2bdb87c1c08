"""Greedy generation equals transformers' greedy `generate` on the same tiny weights (exported with
lpo_jax.models.save_hf), for prompts of different lengths (left padding on both sides)."""
import numpy as np

from lpo_jax.models import save_hf


def test_greedy_matches_transformers_generate(tiny_model, greedy_out, prompts, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    save_hf(tiny_model, str(tmp_path))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    length = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), length), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.tensor(p)
        mask[i, length - len(p):] = 1
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=8, min_new_tokens=8,
                          pad_token_id=0)
    np.testing.assert_array_equal(out[:, length:].numpy(), greedy_out.tokens)
