"""SynthHop testbed policy: word tokenizer, SFT arrays, the cache protocol, and the spread property of a small
SFT warm start (per-question success strictly inside (0, 1) for many questions; prefixes differ in promise)."""
import json
import os

import numpy as np
import pytest

from lpo_jax.tasks import synthhop as sh
from lpo_jax.tasks.synthhop_demos import DemoConfig, make_demonstrations
from lpo_jax.tasks.synthhop_policy import (SynthHopPolicyConfig, build_word_tokenizer, demo_arrays,
                                           ensure_synthhop_policy, read_report, synthhop_world)

SMALL = SynthHopPolicyConfig(env=sh.SynthHopConfig(n_entities=16, relations=("born_in", "mentor_of"), max_hops=2,
                                                   eps_ret=0.2),
                             n_train=32, n_heldout=16, hidden_size=64, intermediate_size=128, sft_len=64,
                             steps=160, batch_size=32, learning_rate=5e-3, spread_prompts=32, spread_samples=8,
                             prefix_roots=16, prefix_samples=4)


@pytest.fixture(scope="module")
def small_policy(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthhop_sft"))
    path, trained = ensure_synthhop_policy(SMALL, cache_dir=root)
    return root, path, trained


def test_word_tokenizer_roundtrip_and_demo_masks():
    kb, train, _ = synthhop_world(SMALL)
    tok = build_word_tokenizer(kb)
    demos = make_demonstrations(kb, train[:8], seed=0, cfg=SMALL.demo, env_cfg=SMALL.env)
    vocab = tok.get_vocab()
    tokens, target = demo_arrays(demos, vocab, SMALL.sft_len)
    for d, row, tgt in zip(demos, tokens, target):
        text = d.prompt + " " + d.completion
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == " ".join(text.split())           # one token per word, lossless
        np.testing.assert_array_equal(row[:len(ids)], ids)
        n_action = sum(len(t.split()) for t, is_obs in d.segments if not is_obs)
        assert tgt.sum() == n_action and tgt[:len(tok.encode(d.prompt))].sum() == 0   # prompt / observations out
    with pytest.raises(ValueError, match="sft_len"):
        demo_arrays(demos, vocab, 8)


def test_cache_protocol(small_policy):
    root, path, trained = small_policy
    assert trained and os.path.basename(path) == SMALL.cache_key()
    again, trained_again = ensure_synthhop_policy(SMALL, cache_dir=root)
    assert again == path and not trained_again
    from lpo_jax.models import Tokenizer, load_hf
    model, tok = load_hf(path), Tokenizer.from_pretrained(path)
    assert model.cfg.vocab_size == tok.vocab_size == read_report(path)["vocab_size"]
    assert not [f for f in os.listdir(root) if ".tmp-" in f]
    with pytest.raises(ValueError, match="unknown SynthHop policy settings"):
        ensure_synthhop_policy({"stepz": 3}, cache_dir=root)


def test_sft_success_spreads_and_prefixes_differ(small_policy):
    report = read_report(small_policy[1])
    print(json.dumps({k: v for k, v in report.items() if k != "config"}))
    assert report["spread"] >= 0.3, report                     # many questions with success in (0.1, 0.9)
    assert report["frac_all_correct"] < 0.5 and report["frac_all_wrong"] < 0.5
    assert 0.05 < report["train_accuracy"] < 0.95
    by_hops = report["train_success_by_hops"]
    assert by_hops["1"] > by_hops["2"]                          # harder questions succeed less
    # mid-episode prefixes differ in promise: continuations after a correct first hop succeed more often
    assert report["prefix_value_std"] > 0.1
    assert report["prefix_success_after_correct_hop1"] > report["prefix_success_after_wrong_hop1"]


def test_default_world_spans_one_to_four_hops():
    """The default testbed world (issue #8): 1- to 4-hop questions, balanced, disjoint splits, one turn per
    hop plus the answer, and every noisy demonstration fits the SFT window."""
    cfg = SynthHopPolicyConfig()
    assert (cfg.env.min_hops, cfg.env.max_hops, cfg.env.turns) == (1, 4, 5)
    kb, train, held = synthhop_world(cfg)
    for split in (train, held):
        counts = np.bincount([e.meta["hops"] for e in split], minlength=5)[1:]
        assert counts.min() >= len(split) // 4 and counts.sum() == len(split)
    assert not {(e.meta["start"], e.meta["relations"]) for e in train} & \
        {(e.meta["start"], e.meta["relations"]) for e in held}
    longest = [e for e in train if e.meta["hops"] == 4][:64]
    demos = make_demonstrations(kb, longest * 4, seed=1, cfg=cfg.demo, env_cfg=cfg.env)
    tokens, target = demo_arrays(demos, build_word_tokenizer(kb).get_vocab(), cfg.sft_len)   # raises if too long
    assert max(d.n_turns for d in demos) == cfg.env.turns and target.sum() > 0
    rates = [np.mean([d.correct for d in demos])]
    assert 0.05 < rates[0] < 0.6                               # 4-hop demos succeed, but rarely
