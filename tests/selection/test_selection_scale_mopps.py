"""MoPPS prior-group fast path (exact at scale) against the reference full-draw path.

Statistical tests run many keys through both paths (vmapped, fixed seeds, so the outcome is deterministic) and
compare the laws: how many prompts come from the prior group, which seen prompts are picked, uniformity over the
prior group, and the law of the prior group's best scores. Each test's false-alarm rate is set by its p-value
threshold (1e-3, stated per assertion); about a dozen such assertions give < ~1.5% at design. Mechanics:
the seen-prompt list kept by `update`, fallback to the reference (bit-identical draws), determinism, no retrace.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lpo_jax.selection import _random
from lpo_jax.selection.mopps import make_mopps, prior_score_quantile

N, B, C, K = 2048, 16, 256, 8
KEYS = 1000  # keys per statistical comparison
ALPHA = 1e-3  # per-assertion false-alarm rate
_CACHE = {}


def _pair(**kw):
    """(fast selector, reference selector, jitted vmapped select over keys for each) for one configuration."""
    name = tuple(sorted(kw.items()))
    if name not in _CACHE:
        fast, ref = make_mopps(N, B, seen_capacity=C, **kw), make_mopps(N, B, seen_capacity=0, **kw)

        def many(sel):
            return jax.jit(jax.vmap(lambda st, cand, k: sel.select(st, cand, k)[1], in_axes=(None, None, 0)))
        _CACHE[name] = (fast, ref, many(fast), many(ref))
    return _CACHE[name]


def _seen_state(sel, n_seen=200, seed=0):
    """n_seen prompts updated once with c = 0..K (posteriors spread from hard to easy; type = c)."""
    state = sel.init(jax.random.key(0))
    rng = np.random.default_rng(seed)
    ids = rng.choice(N, n_seen, replace=False).astype(np.int32)
    c = np.arange(n_seen) % (K + 1)
    state = jax.jit(sel.update, static_argnums=3)(state, jnp.asarray(ids), jnp.asarray(c, jnp.int32), K)
    return state, ids, c


def _chi2_homogeneity(counts_a, counts_b):
    """p-value of a 2 x k contingency chi-square (columns with tiny totals pooled into one)."""
    table = np.stack([counts_a, counts_b]).astype(float)
    small = table.sum(0) < 10
    if small.any():
        table = np.concatenate([table[:, ~small], table[:, small].sum(1, keepdims=True)], axis=1)
    table = table[:, table.sum(0) > 0]
    return stats.chi2_contingency(table)[1]


def _compare_paths(kw, candidates=None):
    fast, ref, many_fast, many_ref = _pair(**kw)
    state, seen_ids, seen_type = _seen_state(fast)
    cand = jnp.arange(N, dtype=jnp.int32) if candidates is None else jnp.asarray(candidates, jnp.int32)
    keys = jax.random.split(jax.random.key(123), KEYS)
    ids_f, ids_r = np.asarray(many_fast(state, cand, keys)), np.asarray(many_ref(state, cand, keys))
    assert not np.array_equal(ids_f, ids_r)  # the fast path ran (other draws for the same keys)
    for ids in (ids_f, ids_r):  # valid batches: B distinct candidates
        assert np.all(np.sort(ids, 1)[:, 1:] != np.sort(ids, 1)[:, :-1])
        assert np.isin(ids, np.asarray(cand)).all()
    is_seen = np.zeros(N, bool)
    is_seen[seen_ids] = True
    type_of = np.full(N, -1)
    type_of[seen_ids] = seen_type
    # 1) how many picks come from the prior group, per call
    n_prior_f, n_prior_r = (~is_seen[ids_f]).sum(1), (~is_seen[ids_r]).sum(1)
    assert _chi2_homogeneity(np.bincount(n_prior_f, minlength=B + 1), np.bincount(n_prior_r, minlength=B + 1)) > ALPHA
    # 2) which seen prompts are picked, by posterior type (c = 0..K) and per prompt
    tf, tr = type_of[ids_f][is_seen[ids_f]], type_of[ids_r][is_seen[ids_r]]
    assert _chi2_homogeneity(np.bincount(tf, minlength=K + 1), np.bincount(tr, minlength=K + 1)) > ALPHA
    # 3) prior-group picks are uniform over the prior-group candidates
    group = np.setdiff1d(np.asarray(cand), seen_ids)
    picks = np.bincount(ids_f[~is_seen[ids_f]], minlength=N)[group]
    assert stats.chisquare(picks).pvalue > ALPHA
    return n_prior_f.mean(), n_prior_r.mean()


@pytest.mark.parametrize("kw, subset", [(dict(), False), (dict(alpha0=2.0, beta0=3.0, target=0.3), True),
                                        (dict(acquisition="threshold"), False),
                                        (dict(acquisition="threshold", alpha0=0.7, beta0=1.5), True)],
                         ids=["topk", "topk_beta23_t0.3_subset", "threshold", "threshold_beta_subset"])
def test_fast_path_law_matches_reference(kw, subset):
    """Subset: 3/4 of the pool as candidates (the listed prompts' membership is looked up)."""
    cand = np.sort(np.random.default_rng(5).choice(N, 3 * N // 4, replace=False)) if subset else None
    mean_f, mean_r = _compare_paths(kw, cand)
    assert 0 < mean_r < B  # both groups compete, so the comparison has power


@pytest.mark.parametrize("kw", [dict(acquisition="topk", alpha0=1.0, beta0=1.0, target=0.5, band=(0.3, 0.7)),
                                dict(acquisition="topk", alpha0=2.0, beta0=3.0, target=0.3, band=(0.3, 0.7)),
                                dict(acquisition="threshold", alpha0=1.0, beta0=1.0, target=0.5, band=(0.2, 0.35)),
                                dict(acquisition="threshold", alpha0=0.7, beta0=1.5, target=0.5, band=(0.3, 0.7))])
def test_prior_group_best_scores_law(kw):
    """The B best scores of N0 iid prior draws: order statistics + inverse survival function == sorting
    exact draws (numpy's float64 Beta sampler). KS per rank (first, middle, last) over many seeds."""
    n0, reps = 1000, 2000
    gen = jax.jit(jax.vmap(lambda s: prior_score_quantile(_random.smallest_uniform_order_stats(s, n0, B), **kw)))
    fast = np.asarray(gen(jnp.arange(reps, dtype=jnp.uint32) * jnp.uint32(7919)))
    g = np.random.default_rng(0).beta(kw["alpha0"], kw["beta0"], size=(reps, n0))
    if kw["acquisition"] == "topk":
        score = -np.abs(g - kw["target"])
    else:
        lo, hi = kw["band"]
        u = np.random.default_rng(1).uniform(size=g.shape)
        score = np.where((g >= lo) & (g <= hi), 1.0 + u, -np.maximum(np.maximum(lo - g, g - hi), 0.0))
    best = -np.sort(-score, axis=1)[:, :B]
    assert np.all(np.diff(fast, axis=1) <= 0)  # descending
    for rank in (0, B // 2, B - 1):
        assert stats.ks_2samp(fast[:, rank], best[:, rank]).pvalue > ALPHA, rank


def test_uniform_order_statistics_marginals():
    """U_(i) of n uniforms ~ Beta(i, n - i + 1); entries past n are NaN."""
    gen = jax.jit(jax.vmap(lambda s: _random.smallest_uniform_order_stats(s, jnp.int32(1000), 8)))
    u = np.asarray(gen(jnp.arange(4000, dtype=jnp.uint32)))
    for i in (1, 8):
        assert stats.kstest(u[:, i - 1], stats.beta(i, 1000 - i + 1).cdf).pvalue > ALPHA
    short = np.asarray(jax.jit(lambda: _random.smallest_uniform_order_stats(jnp.uint32(3), jnp.int32(5), 8))())
    assert np.isfinite(short[:5]).all() and np.isnan(short[5:]).all() and np.all(np.diff(short[:5]) > 0)


def test_sample_without_replacement_is_uniform_and_distinct():
    m, k = 50, 20
    accept = lambda pos: pos % 5 != 0  # noqa: E731  40 acceptable positions
    fn = jax.jit(jax.vmap(lambda s: _random.sample_without_replacement(s, m, k, k, accept, proposals=16)))
    out, done = fn(jnp.arange(3000, dtype=jnp.uint32) * jnp.uint32(2654435761))
    out, done = np.asarray(out), np.asarray(done)
    assert done.all() and (out % 5 != 0).all() and (out < m).all()
    assert np.all(np.sort(out, 1)[:, 1:] != np.sort(out, 1)[:, :-1])
    counts = np.bincount(out[:, 0], minlength=m)[np.arange(m) % 5 != 0]  # first pick uniform
    assert stats.chisquare(counts).pvalue > ALPHA
    counts = np.bincount(out.ravel(), minlength=m)[np.arange(m) % 5 != 0]  # inclusion uniform
    assert stats.chisquare(counts).pvalue > ALPHA


# --- mechanics ------------------------------------------------------------------------------------------------
def test_update_keeps_the_list_of_prompts_off_the_prior():
    fast, _, _, _ = _pair()
    update = jax.jit(fast.update, static_argnums=3)
    state = fast.init(jax.random.key(0))
    rng = np.random.default_rng(3)
    for _ in range(12):  # overlapping batches: repeats must not be listed twice
        ids = rng.choice(200, B, replace=False).astype(np.int32)
        state = update(state, jnp.asarray(ids), jnp.asarray(rng.integers(0, K + 1, B), jnp.int32), K)
    off = np.flatnonzero((np.asarray(state.alpha_N) != 1.0) | (np.asarray(state.beta_N) != 1.0))
    listed = np.asarray(state.seen_ids_C)[:int(state.num_seen)]
    assert int(state.num_seen) == off.size and np.array_equal(np.sort(listed), off)


def test_warm_start_prompts_are_listed_at_init():
    s = np.zeros(N, np.float32)
    s[[3, 70, 2000]] = [1.0, 2.0, 5.0]
    state = make_mopps(N, B, seen_capacity=C, warm_start_successes=s, warm_start_failures=np.zeros(N)).init(None)
    assert int(state.num_seen) == 3 and np.array_equal(np.asarray(state.seen_ids_C)[:3], [3, 70, 2000])


def test_fallback_is_the_reference_bit_for_bit():
    """List overflow (> C seen) and prompts moved off the prior behind the list's back both run the reference."""
    fast, ref, _, _ = _pair()
    sel_f, sel_r = jax.jit(fast.select), jax.jit(ref.select)
    state, _, _ = _seen_state(fast)
    cand = jnp.arange(N, dtype=jnp.int32)
    key = jax.random.key(9)
    ref_ids = lambda st: np.asarray(sel_r(st, cand, key)[1])  # noqa: E731
    assert not np.array_equal(np.asarray(sel_f(state, cand, key)[1]), ref_ids(state))  # fast path by default
    overflow = state.replace(num_seen=jnp.int32(C + 1))
    assert np.array_equal(np.asarray(sel_f(overflow, cand, key)[1]), ref_ids(overflow))
    unlisted = int(np.setdiff1d(np.arange(N), np.asarray(state.seen_ids_C))[0])
    edited = state.replace(alpha_N=state.alpha_N.at[unlisted].set(1.5))  # unlisted prompt off the prior
    assert np.array_equal(np.asarray(sel_f(edited, cand, key)[1]), ref_ids(edited))


def test_deterministic_given_key_static_shapes_no_retrace():
    fast, _, _, _ = _pair()
    traces = []

    def traced_select(state, cand, key):
        traces.append(1)
        return fast.select(state, cand, key)
    select = jax.jit(traced_select)
    cand = jnp.arange(N, dtype=jnp.int32)
    s0 = fast.init(jax.random.key(0))
    s1, _, _ = _seen_state(fast, n_seen=40)
    s2, _, _ = _seen_state(fast, n_seen=250, seed=1)
    outs = [np.asarray(select(s, cand, jax.random.key(k))[1]) for s in (s0, s1, s2) for k in (1, 1, 2)]
    assert len(traces) == 1
    for i in range(0, 9, 3):
        assert np.array_equal(outs[i], outs[i + 1]) and not np.array_equal(outs[i], outs[i + 2])


def test_listed_prompts_beyond_the_first_bucket_are_ranked():
    """C = 16384 runs branches of 4096 and 16384 slots. 5000 listed prompts: those in slots < 4096 sit near 0
    (never picked), those in slots >= 4096 near the target (sd 1e-3, beating most of the prior group)."""
    n, cap = 40000, 16384
    sel = make_mopps(n, B, seen_capacity=cap)
    seen = np.random.default_rng(0).choice(n, 5000, replace=False).astype(np.int32)
    near = np.arange(5000) >= 4096
    state = sel.init(None)
    state = state.replace(alpha_N=state.alpha_N.at[seen].set(np.where(near, 125000.0, 1.0)),
                          beta_N=state.beta_N.at[seen].set(np.where(near, 125000.0, 1e6)),
                          seen_ids_C=state.seen_ids_C.at[:5000].set(seen), num_seen=jnp.int32(5000))
    ids = np.asarray(jax.jit(sel.select)(state, jnp.arange(n, dtype=jnp.int32), jax.random.key(0))[1])
    assert not np.isin(ids, seen[~near]).any()
    assert np.isin(ids, seen[near]).sum() >= B // 2  # ~14 expected; 0 if slots >= 4096 were ignored


def test_large_batch_uses_the_top_k_group_sample():
    """B > 1024 samples the prior group by top-B of hashed keys: valid, distinct, and not the reference's draws."""
    n, b = 8192, 1100
    fast, ref = make_mopps(n, b, seen_capacity=256), make_mopps(n, b, seen_capacity=0)
    state, _, _ = _seen_state(fast)
    cand, key = jnp.arange(n, dtype=jnp.int32), jax.random.key(4)
    ids = np.asarray(jax.jit(fast.select)(state, cand, key)[1])
    assert ids.shape == (b,) and np.unique(ids).size == b and ((ids >= 0) & (ids < n)).all()
    assert not np.array_equal(np.sort(ids), np.sort(np.asarray(jax.jit(ref.select)(state, cand, key)[1])))
