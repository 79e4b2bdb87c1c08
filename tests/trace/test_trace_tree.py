"""TRACE tree rollouts on the agent loop with a tiny random model (spec §6 property 6 and cost accounting)."""
import flax.nnx as nnx
import jax
import numpy as np
import pytest

from lpo_jax.models import ModelConfig, Transformer
from lpo_jax.sampling import AgentConfig, Buckets, Sampler, SamplingConfig
from lpo_jax.tasks import synthhop as sh
from lpo_jax.tasks.base import Example
from lpo_jax.tasks.synthhop_env import SearchEnv
from lpo_jax.trace import tree as tt


class Bytes:
    """Byte-level tokenizer (ids == bytes), matching the tiny model's vocabulary of 256."""

    def encode(self, text):
        return list(text.encode("latin-1", errors="replace"))

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode("latin-1")


P, M, N, T = 2, 2, 1, 3


@pytest.fixture(scope="module")
def rollout():
    kb = sh.make_kb(sh.SynthHopConfig(n_entities=20, max_hops=2))
    examples = {}
    for start, rels in ((1, (0,)), (2, (1, 2))):
        ex = sh.make_example(kb, start, rels)
        q = sh.question_text(kb, start, rels)
        examples[q] = Example(q, ex.answer, ex.meta)
    counter = iter(range(10_000))

    def make_env():
        return SearchEnv(sh.SynthHopSearch(kb, sh.SynthHopConfig(n_entities=20, eps_ret=0.3)), sh.synthhop_reward_fn,
                         max_turns=T, seed=next(counter), resolve_example=examples.__getitem__,
                         fresh_noise_on_restore=True)

    model = Transformer(ModelConfig.tiny("qwen3", tie_embeddings=True), rngs=nnx.Rngs(0))
    sampler = Sampler(model, buckets=Buckets(batch=(4, 8), length=(16, 32, 64, 128, 256)))
    agent = AgentConfig(sampling=SamplingConfig(max_new_tokens=8), max_turns=T, max_len=256, max_obs_tokens=48)
    cfg = tt.TreeConfig(num_prompts=P, roots_per_prompt=M, multiplier=N)
    out = tt.rollout_tree(sampler, Bytes(), make_env, list(examples), np.array([2, 2]), jax.random.PRNGKey(0),
                          agent, cfg)
    return out, cfg


def test_tree_rollout(rollout):
    """One test on purpose: the agent-loop programs compile once per worker (pytest-xdist splits modules)."""
    _check_continuations_reproduce_prefix_tokens_and_env_state(*rollout)
    _check_loss_mask_excludes_observations_and_padding(rollout[0])
    _check_cost_counters(rollout[0])


def _check_continuations_reproduce_prefix_tokens_and_env_state(out, cfg):
    leaves = out.leaves
    valid = np.asarray(leaves.leaf_valid_PL)
    assert valid.sum() == (1 + N) * 4  # every root has candidates (3 turns), so no shortfall
    n_cont = 0
    for p in range(P):
        for l in range(M, cfg.num_leaves):
            if not valid[p, l]:
                continue
            n_cont += 1
            b, j = int(leaves.branch_t_PL[p, l]), int(leaves.src_root_PL[p, l])
            rec, src = out.records[p][l], out.records[p][j]
            assert 1 <= b < src.num_turns and rec.parent == (src.episode_id, b)
            end = src.turn_ends[b]
            np.testing.assert_array_equal(out.tokens[p, l, :end], out.tokens[p, j, :end])   # incl. observations
            np.testing.assert_array_equal(out.obs_mask[p, l, :end], out.obs_mask[p, j, :end])
            assert rec.observations[:b] == src.observations[:b] and rec.actions[:b] == src.actions[:b]
            assert rec.infos[b]["turn"] == b + 1       # the env resumed with b turns behind it
            assert rec.num_turns <= T and out.turn_ids[p, l].max() <= T
    assert n_cont == 4


def _check_loss_mask_excludes_observations_and_padding(out):
    assert not np.any(out.loss_mask & out.obs_mask)
    for p in range(P):
        for l, rec in enumerate(out.records[p]):
            if rec is None:
                assert out.lengths[p, l] == 0 and not out.loss_mask[p, l].any()
                continue
            n = out.lengths[p, l]
            assert not out.loss_mask[p, l, n:].any() and out.loss_mask[p, l, :n].any()
            obs_tokens = out.tokens[p, l][out.obs_mask[p, l] & (out.turn_ids[p, l] > 0)]
            assert Bytes().decode(obs_tokens) == "".join(rec.observations)


def _check_cost_counters(out):
    leaves = out.leaves
    assert out.cost["trajectories"] == int(np.asarray(leaves.leaf_valid_PL).sum())
    assert out.cost["generated_tokens"] < int(out.loss_mask.sum())  # copied turns are not paid again
    assert out.cost["generated_turns"] == int(np.where(leaves.leaf_valid_PL, leaves.n_turns_PL - leaves.branch_t_PL,
                                                       0).sum())
    assert out.K.sum() == M * N * P
    assert np.all(np.asarray(leaves.leaf_valid_PL).sum(-1) == (1 + N) * M)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="expansion"):
        tt.TreeConfig(num_prompts=1, roots_per_prompt=2, expansion="beam")
    cfg = tt.TreeConfig(num_prompts=2, roots_per_prompt=2)
    with pytest.raises(ValueError, match="m_P"):
        tt._check(["a", "b"], [3, 0], cfg)
    with pytest.raises(ValueError, match="no roots"):
        tt._check(["a"], [0], cfg)
