"""Stop-string token patterns (several tokenizations), device tail matching, host cut; length/batch buckets."""
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.sampling import Buckets, cut_text_at_stop, pad_left, pad_right, stop_token_patterns, truncate_at_stop
from lpo_jax.sampling.stop import decode_tokens, encode_text, ends_with_pattern, push_recent


@pytest.fixture(scope="module")
def bpe():
    """A tiny byte-level BPE whose merges make '</search>' tokenize differently after a space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = ["<search> paris capital </search> <answer> france </answer>", "x</search>", " </search>\n"] * 20
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def test_patterns_cover_several_tokenizations(bpe):
    pats = stop_token_patterns(bpe, ["</search>", "</answer>"])
    assert tuple(encode_text(bpe, "</search>")) in pats
    assert len({p for p in pats if "</search>" in decode_tokens(bpe, p)}) >= 2   # e.g. '</search>' and ' </search>'
    for p in pats:
        text = decode_tokens(bpe, p)
        assert "</search>" in text or "</answer>" in text
        assert not any(s in decode_tokens(bpe, p[1:]) for s in ("</search>", "</answer>"))  # shortest suffix
    for context in ("the query", "q ", "a\n"):
        ids = encode_text(bpe, context + " </search>")
        assert any(tuple(ids[-len(p):]) == p for p in pats), context


def test_device_tail_matching():
    pats = ((5, 6), (7,), (1, 2, 3))
    recent = jnp.full((4, 3), -1, jnp.int32)
    seqs = [[9, 5, 6], [7], [2, 3], [1, 2, 3]]     # rows: pattern, pattern, partial, pattern
    hits = []
    for t in range(3):
        tok = jnp.asarray([s[t] if t < len(s) else 0 for s in seqs], jnp.int32)
        recent = push_recent(recent, tok)
        hits.append(np.asarray(ends_with_pattern(recent, pats)))
    np.testing.assert_array_equal(np.stack(hits), [[False, True, False, False],
                                                   [False, False, False, False],
                                                   [True, False, False, True]])


def test_host_cut_at_earliest_stop(bpe):
    text = "think <search> a b </search> more </answer>"
    assert cut_text_at_stop(text, ["</answer>", "</search>"]) == ("think <search> a b </search>", "</search>")
    assert cut_text_at_stop("nothing", ["</a>"]) == ("nothing", None)
    ids = encode_text(bpe, text)
    keep, cut, found = truncate_at_stop(bpe, ids, ["</search>"])
    assert found == "</search>" and cut.endswith("</search>")
    assert "</search>" in decode_tokens(bpe, ids[:keep]) and "</search>" not in decode_tokens(bpe, ids[:keep - 1])
    assert truncate_at_stop(bpe, ids, ["<none>"]) == (len(ids), decode_tokens(bpe, ids), None)


def test_stop_pattern_errors(bpe):
    with pytest.raises(TypeError, match="sequence of strings"):
        stop_token_patterns(bpe, "</a>")
    with pytest.raises(ValueError, match="non-empty"):
        stop_token_patterns(bpe, [""])


def test_buckets_pick_and_pad():
    b = Buckets(batch=(1, 2, 4, 8), length=(8, 16))
    assert [b.batch_bucket(n) for n in (1, 2, 3, 5)] == [1, 2, 4, 8]
    assert b.batch_bucket(3, multiple_of=4) == 4 and b.batch_bucket(1, multiple_of=2) == 2
    assert b.batch_bucket(5, multiple_of=3) == 9          # rounded up to the data-parallel size
    assert b.length_bucket(9) == 16
    with pytest.raises(ValueError, match="largest bucket"):
        b.length_bucket(17)
    with pytest.raises(ValueError, match="strictly increasing"):
        Buckets(batch=(4, 2))
    tokens, mask = pad_left([[1, 2], [3]], 4, 3, pad_id=0)
    np.testing.assert_array_equal(tokens, [[0, 0, 1, 2], [0, 0, 0, 3], [0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]])   # filler row: 1 token
    tokens, mask = pad_right([[1, 2], []], 3, 2)
    np.testing.assert_array_equal(tokens, [[1, 2, 0], [0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="empty"):
        pad_left([[]], 4, 1)
