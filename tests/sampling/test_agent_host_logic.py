"""Agent-loop host logic with a scripted stand-in for the Sampler (no model, no compiles): EOS ends an
episode (the env sees the text without EOS, the record keeps the token), a full context ends episodes,
a failing reset ends only its own episode, per-token records stay consistent."""
import types

import numpy as np

from conftest import ByteTokenizer
from lpo_jax.sampling import AgentConfig, Buckets, SamplingConfig, run_episodes
from lpo_jax.sampling.config import FINISH_EOS, FINISH_LENGTH

EOS = 0


class ScriptedSampler:
    """Implements the Sampler methods the agent loop uses; row r's k-th decode returns scripts[r][k]."""

    buckets = Buckets(batch=(4, 8), length=(8, 16, 32, 64))
    data_parallel_size = 1

    def __init__(self, scripts):
        self.scripts, self.turn = scripts, [0] * len(scripts)

    def start(self, prefixes, max_len, pad_id=0):
        rows = self.buckets.batch_bucket(len(prefixes))
        cache = types.SimpleNamespace(index=self.buckets.length_bucket(max(map(len, prefixes))), max_len=max_len)
        return types.SimpleNamespace(cache=cache, batch_size=rows), rows, np.arange(rows) < len(prefixes)

    def decode(self, st, key, cfg, active, limit):
        n = cfg.max_new_tokens
        tokens, lengths = np.zeros((st.batch_size, n), np.int32), np.zeros(st.batch_size, np.int32)
        finish = np.full(st.batch_size, FINISH_LENGTH, np.int32)
        for r in np.flatnonzero(active):
            seg = list(self.scripts[r][self.turn[r]].encode("latin-1"))[: limit[r]]
            if EOS in seg:
                seg, finish[r] = seg[: seg.index(EOS) + 1], FINISH_EOS
            tokens[r, :len(seg)], lengths[r] = seg, len(seg)
            self.turn[r] += 1
        st.cache.index += int(lengths.max())
        out = types.SimpleNamespace(tokens=tokens, lengths=lengths, finish_reason=finish,
                                    logprobs=-np.ones((st.batch_size, n), np.float32))
        return st, out

    def append(self, st, chunks, pad_id=0):
        longest = max(map(len, chunks))
        st.cache.index += self.buckets.length_bucket(longest) if longest else 0
        return st

    def rewind(self, st, seg_start, lengths, drop):
        return st


class EchoEnv:
    calls: list = []

    def reset(self, prompt):
        if prompt == "broken":
            raise OSError("cannot start")
        return f"{prompt}:"

    def step(self, action):
        EchoEnv.calls.append(action)
        return "obs", "</a>" in action, 1.0 if "</a>" in action else 0.0, {}


def test_eos_context_and_failed_reset():
    scripts = [["hi\x00"], ["x <a>y</a> ignored"], ["aaaaaaaaaa"] * 9, []]
    cfg = AgentConfig(sampling=SamplingConfig(max_new_tokens=10, eos_ids=(EOS,)), max_turns=9, max_len=64,
                      stop_strings=("</a>",), max_obs_tokens=8)
    EchoEnv.calls = []
    batch, recs = run_episodes(ScriptedSampler(scripts), ByteTokenizer(), EchoEnv, ["p", "q", "r", "broken"], 0, cfg)
    eos, answer, long, broken = recs
    assert eos.finish == "eos" and eos.actions == ["hi"] and eos.tokens[-1] == EOS and eos.generated[-1]
    assert "hi" in EchoEnv.calls and not any("\x00" in c for c in EchoEnv.calls)
    assert answer.finish == "answer" and answer.actions == ["x <a>y</a>"] and answer.reward == 1.0
    assert broken.finish == "error" and broken.num_turns == 0 and "OSError" in broken.infos[0]["error"]
    # slots: prompt bucket 8, then each turn 10 (longest segment) + 8 (observation bucket): 8 + 3*18 = 62,
    # and a 4th turn would need 10 + 8 more of the 64 - so the long episode ends with a full context
    assert long.finish == "context" and long.num_turns == 3
    assert batch.num_turns.tolist() == [1, 1, 3, 0]
    for i, r in enumerate(recs):
        n = len(r.tokens)
        np.testing.assert_array_equal(batch.loss_mask[i, :n], r.generated)
        np.testing.assert_array_equal(batch.logprobs[i, :n], np.where(r.generated, -1.0, 0.0))
