"""Agent loop on a tiny model with a toy tool environment: per-token records, stop strings (device-matched
and host-only), failing and timing-out tools, log-probs vs a full forward over whole episodes, branching
from turn boundaries (snapshot and replay), early exit of the decode loop."""
import time

import numpy as np
import pytest

from conftest import GREEDY, full_logprobs
from lpo_jax.sampling import AgentConfig, SamplingConfig, branch_episodes, run_episodes, stop_token_patterns
from lpo_jax.sampling.stop import cut_text_at_stop

PROMPTS = ["p0", "fail", "slow", "p3"]
DONE_AT = {"p0": 2}
SEGMENT = 6


class ToyEnv:
    """Observation '<obs n>' after the n-th action; done (reward 1) at turn DONE_AT[prompt]. 'fail' raises on
    its first step, 'slow' sleeps past the timeout on its first step. Snapshots = the action log."""

    def reset(self, prompt):
        self.prompt, self.log = prompt, []
        return f"Question: {prompt}\n"

    def step(self, action):
        if self.prompt == "slow" and not self.log:
            time.sleep(1.0)
        self.log.append(action)
        n = len(self.log)
        if self.prompt == "fail" and n == 1:
            raise RuntimeError("tool crashed")
        done = n >= DONE_AT.get(self.prompt, 99)
        return f"<obs {n}>", done, float(done), {"n": n}

    def snapshot(self):
        return self.prompt, list(self.log)

    def restore(self, snap):
        self.prompt, self.log = snap[0], list(snap[1])


class ReplayEnv(ToyEnv):
    """No snapshot/restore: branching replays the recorded actions."""
    snapshot = None
    restore = None


@pytest.fixture(scope="module")
def first_segments(sampler, byte_tokenizer):
    """What greedy decoding produces first for each episode (same model, same prompt tokens)."""
    out = sampler.generate([byte_tokenizer.encode(f"Question: {p}\n") for p in PROMPTS], 0, GREEDY)
    return [byte_tokenizer.decode(out.tokens[i, :SEGMENT]) for i in range(len(PROMPTS))]


def _pick_stop_strings(segs):
    """A 2-char stop string that ends episode 0's first action after 4 tokens (given to the device), and
    one that ends another episode's first action early (host only: the device misses it, the host cuts
    and rewinds the cache) without touching episode 0's cut: (s_dev, s_host, host episode, host cut)."""
    s_dev = segs[0][2:4]
    assert s_dev not in segs[0][:3]
    for i in range(1, len(segs)):
        for j in range(1, 4):
            cand = segs[i][j:j + 2]
            cut, found = cut_text_at_stop(segs[i], (s_dev, cand))
            if found == cand and len(cut) == j + 2 and cut_text_at_stop(segs[0], (s_dev, cand))[0] == segs[0][:4]:
                return s_dev, cand, i, j + 2
    raise AssertionError(f"no usable host-only stop string in {segs!r}")


@pytest.fixture(scope="module")
def agent_cfg(first_segments, byte_tokenizer):
    s_dev, s_host, _, _ = _pick_stop_strings(first_segments)
    sampling = SamplingConfig(max_new_tokens=SEGMENT, greedy=True,
                              stop_sequences=stop_token_patterns(byte_tokenizer, [s_dev]))
    return AgentConfig(sampling=sampling, max_turns=3, max_len=96, stop_strings=(s_dev, s_host),
                       max_obs_tokens=8, tool_timeout_s=0.3)


@pytest.fixture(scope="module")
def episodes(sampler, byte_tokenizer, agent_cfg):
    return run_episodes(sampler, byte_tokenizer, ToyEnv, PROMPTS, 0, agent_cfg)


def test_first_actions_are_cut_at_stop_strings(episodes, first_segments, agent_cfg):
    _, records = episodes
    for r, seg in zip(records, first_segments):
        want, _ = cut_text_at_stop(seg, agent_cfg.stop_strings)
        assert r.actions[0] == want
    _, _, i_host, cut_host = _pick_stop_strings(first_segments)
    assert records[0].actions[0] == first_segments[0][:4]                      # device stop
    assert records[i_host].actions[0] == first_segments[i_host][:cut_host]      # host-only stop (rewound)


def test_episode_structure_and_masks(episodes, byte_tokenizer, agent_cfg):
    batch, records = episodes
    assert batch.tokens.shape == (4, agent_cfg.max_len)
    np.testing.assert_array_equal(batch.episode_ids, [0, 1, 2, 3])
    assert records[0].finish == "answer" and records[0].num_turns == 2 and records[0].reward == 1.0
    assert all(r.finish == "max_turns" and r.num_turns == 3 for r in records[1:])
    for i, r in enumerate(records):
        n = len(r.tokens)
        assert batch.lengths[i] == n
        np.testing.assert_array_equal(batch.tokens[i, :n], r.tokens)
        np.testing.assert_array_equal(batch.loss_mask[i, :n], r.generated)
        assert not batch.loss_mask[i, n:].any() and not batch.obs_mask[i, n:].any()
        ends = r.turn_ends
        assert ends[0] == len(f"Question: {r.prompt}\n") and len(ends) == r.num_turns + 1
        np.testing.assert_array_equal(batch.turn_ends[i, :len(ends)], ends)
        for t in range(1, r.num_turns + 1):
            seg = slice(ends[t - 1], ends[t])
            assert (batch.turn_ids[i, seg] == t).all()
            gen = np.asarray(r.generated[seg])
            n_act = len(byte_tokenizer.encode(r.actions[t - 1]))
            assert gen[:n_act].all() and not gen[n_act:].any()   # action (loss) then observation (no loss)
            text = byte_tokenizer.decode(r.tokens[seg])
            assert text.startswith(r.actions[t - 1])
            if t < r.num_turns:
                assert text[len(r.actions[t - 1]):] == r.observations[t - 1][:agent_cfg.max_obs_tokens]
        assert (batch.turn_ids[i, :ends[0]] == 0).all() and batch.obs_mask[i, :ends[0]].all()


def test_failing_and_slow_tools_give_error_observations(episodes):
    _, records = episodes
    fail, slow = records[1], records[2]
    assert "RuntimeError: tool crashed" in fail.observations[0] and "error" in fail.infos[0]
    assert "TimeoutError" in slow.observations[0] and slow.infos[0].get("timeout")
    assert fail.observations[1] == "<obs 2>"          # the episode went on after the error


def test_episode_logprobs_equal_full_forward(tiny_model, episodes):
    """Cache continuation across decode / observation append / host rewind equals one full forward."""
    batch, records = episodes
    for i, r in enumerate(records):
        pos = np.flatnonzero(r.generated)
        logp_all, logits = full_logprobs(tiny_model, [(r.tokens[:1], r.tokens[1:])])[0]
        np.testing.assert_allclose(batch.logprobs[i, pos], logp_all[pos - 1], atol=1e-5)
        np.testing.assert_array_equal(np.asarray(r.tokens)[pos], np.argmax(logits, -1)[pos - 1])  # greedy


@pytest.mark.parametrize("env_cls", [ToyEnv, ReplayEnv])
def test_branch_from_turn_boundaries(sampler, byte_tokenizer, agent_cfg, episodes, env_cls):
    """Continuations copy turns 1..t (observations included), restore the env there, and - being greedy -
    regenerate the source episode's remaining turns exactly; a repeated prefix is prefilled once."""
    _, records = episodes
    points = [(0, 1), (3, 1), (3, 1), (3, 2)]
    batch, branched = branch_episodes(sampler, byte_tokenizer, env_cls, records, points, 0, agent_cfg, first_id=10)
    np.testing.assert_array_equal(batch.episode_ids, [10, 11, 12, 13])
    for (i, t), b in zip(points, branched):
        src = records[i]
        end = src.turn_ends[t]
        assert b.parent == (src.episode_id, t)
        assert b.tokens[:end] == src.tokens[:end] and b.generated[:end] == src.generated[:end]
        assert b.turn[:end] == src.turn[:end]
        assert b.num_turns == src.num_turns and b.finish == src.finish
        assert b.tokens == src.tokens and b.actions == src.actions
        assert b.observations[t] == f"<obs {t + 1}>"       # env state restored (log of t actions)
        np.testing.assert_allclose(b.logprobs, src.logprobs, atol=1e-5)


def test_branch_rejects_bad_points(sampler, byte_tokenizer, agent_cfg, episodes):
    _, records = episodes
    with pytest.raises(ValueError, match="branch turn"):
        branch_episodes(sampler, byte_tokenizer, ToyEnv, records, [(0, 2)], 0, agent_cfg)


def test_decode_exits_early_when_all_rows_end(sampler, byte_tokenizer, agent_cfg):
    scfg = agent_cfg.sampling
    st, rows, active = sampler.start([byte_tokenizer.encode(f"Question: {p}\n") for p in PROMPTS], agent_cfg.max_len)
    start = int(st.cache.index)
    st, out = sampler.decode(st, 0, scfg, active=active, limit=np.array([2, 1, 2, 1]))
    np.testing.assert_array_equal(out.lengths, [2, 1, 2, 1])
    assert int(st.cache.index) - start == 2 < scfg.max_new_tokens
