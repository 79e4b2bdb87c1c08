"""The TRACE RL loop end to end on a tiny random word-level policy (plumbing, budgets, shapes, accounting).

One module-scoped trainer (programs compile once): each method runs 3 steps; per step we check the budgets,
recompute the generated-token counter from the token arrays, and snapshot the trace counters.
"""
import collections
import os
import types

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.models import ModelConfig, Transformer
from lpo_jax.objectives import make_config, prepare
from lpo_jax.tasks import synthhop as sh
from lpo_jax.tasks.synthhop_policy import (SynthHopPolicyConfig, agent_config, build_word_tokenizer,
                                           make_env_factory, synthhop_world)
from lpo_jax.trace.allocation import prefix_candidates
from lpo_jax.trace.batch import make_batch
from lpo_jax.trace.train import TraceTrainer
from lpo_jax.trace.train_config import TraceTrainConfig, trace_train_config

from trace_tree_cases import random_tree

POLICY = SynthHopPolicyConfig(env=sh.SynthHopConfig(n_entities=16, relations=("born_in", "mentor_of"), max_hops=2,
                                                    eps_ret=0.2), n_train=24, n_heldout=8)
SMALL = dict(steps=3, pool_prompts=4, root_budget=4, roots_per_prompt=2, multiplier=2, tree_group=2, flat_group=2,
             flat_roots=4, pad_leaves=6, eval_samples=1, predictor_warm=1, predictor_batch=32, predictor_buffer=256)


@pytest.fixture(scope="module")
def trainer():
    kb, train, held = synthhop_world(POLICY)
    tok = build_word_tokenizer(kb)
    cfg = ModelConfig.tiny("qwen3", vocab_size=len(tok), tie_embeddings=True, eos_token_id=1)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    from lpo_jax.models import Tokenizer
    return TraceTrainer(model, Tokenizer(tok), lambda seed: make_env_factory(kb, POLICY, seed),
                        [e.prompt for e in train], [e.prompt for e in held],
                        agent_config(POLICY, max_new_tokens=4, max_len=128),
                        compiler_options={"xla_backend_optimization_level": 0})


def _own_tokens(out):
    """Generated tokens of valid leaves in turns after their branch point (independent recount)."""
    valid = np.asarray(out.leaves.leaf_valid_PL)
    branch = np.asarray(out.leaves.branch_t_PL)
    own = out.loss_mask & (out.turn_ids > branch[..., None]) & valid[..., None]
    return int(own.sum())


def _run(trainer, method, **kw):
    cfg = trace_train_config(SMALL, method=method, **kw)
    steps = []

    def on_step(row, out):
        steps.append((row, out, collections.Counter(trainer.trace_counts), collections.Counter(trainer.sampler.trace_counts)))

    result = trainer.run(cfg, on_step=on_step)
    return cfg, result, steps


@pytest.fixture(scope="module")
def runs(trainer):
    return {m: _run(trainer, m) for m in ("trace", "tree_random", "grpo_flat")}


@pytest.mark.parametrize("method", ["trace", "tree_random", "grpo_flat"])
def test_loop_runs_with_static_shapes(runs, method):
    cfg, result, steps = runs[method]
    assert result.summary["steps"] == 3 and len(result.history) == 3
    counts2, counts3 = steps[1][2], steps[2][2]
    assert counts2 == counts3, f"retrace after step 2: {counts2} -> {counts3}"   # our jitted pieces
    for row, *_ in steps:
        assert row["skipped"] == 0 and np.isfinite(row["loss"]) and np.isfinite(row["predictor_mse"])
        assert 0 <= row["contrast_ratio"] <= 1 and 0 <= row["nonzero_adv_frac"] <= 1
    assert 0 <= result.summary["accuracy"] <= 1 and len(result.evals) == 2


@pytest.mark.parametrize("method", ["trace", "tree_random", "grpo_flat"])
def test_budgets_exactly_spent(runs, method):
    cfg, _, steps = runs[method]
    N = cfg.effective_multiplier
    for row, out, *_ in steps:
        leaves = out.leaves
        M = leaves.num_roots
        valid = np.asarray(leaves.leaf_valid_PL)
        roots, conts = valid[:, :M].sum(-1), valid[:, M:].sum(-1)
        budget = cfg.flat_roots if method == "grpo_flat" else cfg.root_budget
        assert roots.sum() == budget == row["roots"]
        if method == "grpo_flat":
            assert conts.sum() == 0 and set(roots.tolist()) <= {0, cfg.flat_group}
            continue
        cand = np.asarray(prefix_candidates(leaves.root_valid_PM, leaves.root_n_turns_PM, leaves.max_turns))
        np.testing.assert_array_equal(out.K.sum((1, 2)), conts)                   # every allocated unit rolled out
        if method == "trace":   # per prompt: exactly m_i N continuations unless it has no candidate prefix
            np.testing.assert_array_equal(conts, np.where(cand.any((1, 2)), roots * N, 0))
        else:                   # random expansion: N per root that has a candidate
            np.testing.assert_array_equal(conts, (cand.any(-1) * N).sum(-1))
        assert not (out.K > 0)[~cand].any()                                       # only candidate prefixes


@pytest.mark.parametrize("method", ["trace", "tree_random", "grpo_flat"])
def test_cost_accounting_counts_only_own_tokens(runs, method):
    _, result, steps = runs[method]
    total = 0
    for row, out, *_ in steps:
        assert out.cost["generated_tokens"] == _own_tokens(out)
        assert out.cost["trajectories"] == int(np.asarray(out.leaves.leaf_valid_PL).sum())
        total += out.cost["generated_tokens"]
        assert row["generated_tokens"] == total
    assert result.summary["generated_tokens"] == total


def test_token_budget_stops_the_run(trainer, runs):
    per_step = runs["tree_random"][2][0][0]["generated_tokens"]
    cfg, result, steps = _run(trainer, "tree_random", token_budget=max(per_step // 2, 1), steps=5)
    assert result.summary["steps"] == 1 and result.summary["generated_tokens"] >= cfg.token_budget


def test_root_objectives_in_the_loop(trainer):
    """Stage 1 at the warm-start values (v = 0.5 everywhere): the spec's "groups" spreads pairs, "trajectories"
    ([ours], exact DP) puts the whole budget on one prompt (4 V(4) = 3.5 > 2 x 2 V(2) = 2); a run with it and
    a 3-member predictor ensemble (stage 1 on [E, P] member values)."""
    v, key = np.full((4,), 0.5, np.float32), jax.random.PRNGKey(3)
    for objective, expected in (("groups", [0, 0, 2, 2]), ("trajectories", [0, 0, 0, 4])):
        cfg = trace_train_config(SMALL, root_objective=objective, roots_per_prompt=4, pad_leaves=12)
        assert sorted(trainer.allocate(cfg, v, key).tolist()) == expected, objective
    cfg, result, steps = _run(trainer, "trace", root_objective="trajectories", steps=2, predictor_ensemble=3)
    assert all(row["roots"] == SMALL["root_budget"] and row["skipped"] == 0 for row, *_ in steps)
    pcfg = trainer.predictor_config(cfg)
    v = trainer.root_values(result.params, pcfg, result.predictor, trainer.train_prompts[:4])
    assert v.shape == (3, 4) and np.ptp(v, axis=0).max() > 0     # trained members disagree somewhere


def test_lpo_and_segment_advantages_run(trainer):
    for adv in ("lpo", "segment"):
        _, result, steps = _run(trainer, "trace", advantage=adv, steps=1)
        assert all(row["skipped"] == 0 and np.isfinite(row["loss"]) for row, *_ in steps)


def test_lpo_targets_on_tree_leaf_groups_with_padded_leaves():
    rng = np.random.default_rng(0)
    arrays, leaves = random_tree(rng, P=3, M=3, N=2, T=4)
    P, L, S = 3, arrays["L"], 24
    valid = np.asarray(leaves.leaf_valid_PL)
    lengths = np.where(valid, rng.integers(6, S, (P, L)), 0)
    pos = np.arange(S)
    turn_ids = np.where(pos >= 2, 1 + (pos - 2) // 5, 0).clip(0, 4) * (pos < lengths[..., None])
    out = types.SimpleNamespace(leaves=leaves, tokens=rng.integers(3, 50, (P, L, S)).astype(np.int32),
                                lengths=lengths, loss_mask=(turn_ids > 0) & (pos % 5 != 0),
                                turn_ids=turn_ids.astype(np.int32), logprobs=np.zeros((P, L, S), np.float32))
    cfg = make_config("lpo_fwd")
    batch, extra, sub, _, idx = make_batch(out, rows=4, advantage="lpo", lpo_cfg=cfg)
    phi = np.asarray(batch.targets.target_logits_BK)
    sub_valid = np.asarray(sub.leaf_valid_PL)
    assert idx.tolist()[:3] == [0, 1, 2] and idx[3] == -1 and not sub_valid[3].any()
    assert np.all(np.isneginf(phi[~sub_valid])) and np.all(np.isfinite(phi[sub_valid]))
    for b in range(3):
        keep = sub_valid[b]
        if keep.sum() < 2:                      # a single valid leaf: centred reward 0, no contrast
            np.testing.assert_array_equal(phi[b, keep], 0.0)
            continue
        ref = prepare(jnp.asarray(np.asarray(sub.reward_PL)[b:b + 1, keep]),
                      jnp.asarray(np.asarray(batch.loss_mask_BKT)[b:b + 1, keep]), cfg)
        np.testing.assert_allclose(phi[b, keep], np.asarray(ref.target_logits_BK)[0], rtol=1e-5, atol=1e-6)
    assert 0 <= extra["nonzero_adv_frac"] <= 1
    np.testing.assert_array_equal(np.asarray(batch.loss_mask_BKT)[~sub_valid], 0)


@pytest.mark.parametrize("bad,match", [
    (dict(method="bfs"), "method"), (dict(root_budget=7), "root_budget"),
    (dict(predictor_features="cls"), "predictor_features"), (dict(predictor_target="subtree"), "predictor_target"),
    (dict(predictor_prompt_share=1.5), "predictor_prompt_share"), (dict(root_objective="mixed"), "root_objective"),
    (dict(predictor_ensemble=0), "predictor_ensemble")])
def test_bad_settings_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        TraceTrainConfig(**bad)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown TRACE train setting"):
        trace_train_config({"methd": "trace"})
    from lpo_jax.trace import run as trace_run
    configs = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    for name in ("trace_mhqa.py", "trace_qwen3.py"):   # the shipped configs validate for every method
        for method in ("trace", "tree_random", "grpo_flat"):
            assert trace_train_config(trace_run._load(os.path.join(configs, f"{name}:{method}")).train).method == method
    from lpo_jax.trace.features import feature_dim
    assert feature_dim(8, "mean") == 8 and feature_dim(8, "mean_last_len") == 17
    assert TraceTrainConfig(method="grpo_flat").advantage_used == "grpo_flat"
    assert TraceTrainConfig(method="grpo_flat", advantage="lpo").advantage_used == "lpo"
