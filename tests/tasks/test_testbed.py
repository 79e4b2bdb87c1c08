"""Testbed task family: splits, answers, rewards, noisy demonstrations, char tokenizer round trip."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.tasks.base import Example
from lpo_jax.tasks.char_tokenizer import (CHARS, EOS_ID, PAD_ID, VOCAB_SIZE, decode_chars, encode_chars)
from lpo_jax.tasks.testbed import (TestbedTaskConfig, demonstration, generate_splits, is_heldout_prompt,
                                   make_example, sample_demonstrations, testbed_reward)

SMALL = TestbedTaskConfig(levels=(3, 4, 5), n_train=300, n_heldout=40, seed=1)


def test_splits_are_deterministic_distinct_and_disjoint():
    train, held = generate_splits(SMALL)
    train2, held2 = generate_splits(SMALL)
    assert train == train2 and held == held2
    assert len(train) == 300 and len(held) == 40
    assert len({e.prompt for e in train}) == 300
    assert not {e.prompt for e in train} & {e.prompt for e in held}
    assert all(is_heldout_prompt(e.prompt) for e in held)
    assert not any(is_heldout_prompt(e.prompt) for e in train)
    assert [e.uid for e in train] == list(range(300))
    assert {e.meta["level"] for e in train} == {3, 4, 5}
    assert generate_splits(TestbedTaskConfig(levels=(3, 4, 5), n_train=300, n_heldout=40, seed=2))[0] != train


def test_examples_and_reward_by_hand():
    ex = make_example("sort", "31415")
    assert (ex.prompt, ex.answer, ex.meta["repeats"], ex.meta["level"]) == ("s:31415=", "11345", 1, 5)
    rex = make_example("rsort", "2718")
    assert (rex.prompt, rex.answer) == ("r:2718=", "8721")
    assert testbed_reward("11345", ex) == 1.0
    assert testbed_reward(" 11345\n", ex) == 1.0
    assert testbed_reward("1345", ex) == 0.0
    assert testbed_reward("113455", ex) == 0.0
    assert testbed_reward("", ex) == 0.0
    with pytest.raises(ValueError):
        make_example("sort", "12a")


def test_too_many_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="distinct testbed problems"):
        generate_splits(TestbedTaskConfig(levels=(1,), ops=("sort",), n_train=50, n_heldout=0))


@settings(max_examples=200, deadline=None)
@given(digits=st.text(alphabet="0123456789", min_size=1, max_size=12), op=st.sampled_from(["sort", "rsort"]),
       seed=st.integers(0, 2**16))
def test_demonstration_slips_only_drop_one_copy_of_repeated_digits(digits, op, seed):
    rng = np.random.default_rng(seed)
    exact = make_example(op, digits).answer
    assert demonstration(op, digits, rng, 0.0) == exact
    noisy = demonstration(op, digits, rng, 0.5)
    assert list(noisy) == sorted(noisy, reverse=op == "rsort")
    for d in set(digits):
        dropped = digits.count(d) - noisy.count(d)
        assert dropped in ((0, 1) if digits.count(d) > 1 else (0,))


def test_demonstrations_avoid_the_heldout_region_and_slip_at_the_set_rate():
    rng = np.random.default_rng(0)
    demos = sample_demonstrations(SMALL, 2000, rng, slip_prob=0.3)
    assert not any(is_heldout_prompt(p) for p, _ in demos)
    slipped = repeated = 0
    for prompt, target in demos:
        ex = make_example("sort" if prompt[0] == "s" else "rsort", prompt[2:-1])
        repeated += ex.meta["repeats"]
        slipped += len(ex.answer) - len(target)
    assert 0.25 < slipped / repeated < 0.35


def test_char_tokenizer_round_trip_through_auto_tokenizer(auto_tokenizer):
    tok = auto_tokenizer
    assert len(tok) == VOCAB_SIZE == 64
    assert tok.eos_token_id == EOS_ID and tok.pad_token_id == PAD_ID and tok.padding_side == "left"
    text = "s:31415=11345 " + CHARS
    ids = tok.encode(text)
    assert ids == encode_chars(text) and len(ids) == len(text)
    assert tok.decode(ids) == text == decode_chars(ids)
    assert tok.decode(ids + [EOS_ID, PAD_ID], skip_special_tokens=True) == text
    assert tok.encode("1<eos>") == [encode_chars("1")[0], EOS_ID]
    batch = tok(["s:1=", "s:123="], padding=True)
    assert batch["input_ids"][0][:2] == [PAD_ID, PAD_ID] and batch["attention_mask"][0] == [0, 0, 1, 1, 1, 1]
    chat = tok.apply_chat_template([{"role": "user", "content": "s:12="}], tokenize=False, add_generation_prompt=True)
    assert chat == "s:12="
    assert isinstance(make_example("sort", "1"), Example)
