"""The SynthHop TRACE testbed: the cached SFT policy (`tasks.synthhop_policy`) wrapped in a `TraceTrainer`.

    trainer = synthhop_trainer()                     # trains / loads the warm start, compiles lazily
    out = trainer.run(trace_train_config(method="trace", token_budget=20_000))
"""
from __future__ import annotations

from lpo_jax.tasks.synthhop_policy import (SynthHopPolicyConfig, agent_config, ensure_synthhop_policy,
                                           make_env_factory, synthhop_world)
from lpo_jax.trace.train import TraceTrainer


def synthhop_trainer(policy_cfg: SynthHopPolicyConfig | None = None, *, path: str | None = None,
                     n_heldout: int | None = None, log=None) -> TraceTrainer:
    """TraceTrainer over the SynthHop world of `policy_cfg` (default settings) and its cached SFT policy
    (`path` overrides the cache). `n_heldout` limits the held-out questions used for accuracy."""
    from lpo_jax.models import Tokenizer, load_hf

    policy_cfg = policy_cfg or SynthHopPolicyConfig()
    if path is None:
        path, _ = ensure_synthhop_policy(policy_cfg, log=log)
    kb, train, held = synthhop_world(policy_cfg)
    held = held[:n_heldout] if n_heldout else held
    model = load_hf(path)
    tok = Tokenizer.from_pretrained(path)
    return TraceTrainer(model, tok, lambda seed: make_env_factory(kb, policy_cfg, seed), [e.prompt for e in train],
                        [e.prompt for e in held], agent_config(policy_cfg))
