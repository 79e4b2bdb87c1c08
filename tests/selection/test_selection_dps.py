"""DPS properties (spec §7, 6-11), the exact-Bayes and NumPyro references, and selector mechanics."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lpo_jax.selection.dps import make_dps, prior_counts, transition_matrix
from lpo_jax.selection.dps_history import dps_hmm_model, filter_history, hmm_log_marginal
from lpo_jax.selection.exact_bayes import exact_posterior

K = 8
C_OF_STATE = {0: 0, 1: 4, 2: 8}
UNIFORM = (1 / 3, 1 / 3, 1 / 3)
_filter = jax.jit(filter_history, static_argnames=("n", "emission"))


def _history(obs, length):
    """obs: list of states or None -> padded (successes, observed) arrays of a fixed length (one compile)."""
    succ = [C_OF_STATE[o] if o is not None else 0 for o in obs] + [0] * (length - len(obs))
    seen = [o is not None for o in obs] + [False] * (length - len(obs))
    return jnp.asarray(succ, jnp.int32), jnp.asarray(seen)


def _p2_after(obs, decay, prior="uniform", length=12):
    succ, seen = _history(obs, length)
    out = _filter(succ, seen, K, a0=prior_counts(prior), decay=decay)
    return float(out["pred_T3"][len(obs) - 1, 1])


# --- the spec's test vectors, through the selector itself -------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    sel = make_dps(4, 1, decay=0.7)
    return sel, jax.jit(sel.select), jax.jit(sel.update, static_argnums=3)


def _run_selector(tiny, obs):
    sel, select, update = tiny
    state, _, _ = select(sel.init(jax.random.key(0)), jnp.arange(4, dtype=jnp.int32), jax.random.key(1))
    preds = []
    for o in obs:  # None: another prompt is observed, prompt 0 only propagates
        ids, c = (jnp.array([3]), jnp.array([4])) if o is None else (jnp.array([0]), jnp.array([C_OF_STATE[o]]))
        state = update(state, ids, c, K)
        preds.append(np.asarray(state.belief_pred_IN[:, 0]))
    return preds, state


def test_spec_vectors(tiny):
    for o in range(3):
        expected = np.full(3, 0.3)
        expected[o] = 0.4
        np.testing.assert_allclose(_run_selector(tiny, [o])[0][-1], expected, atol=1e-6)
    np.testing.assert_allclose(_run_selector(tiny, [1, 1])[0][-1], [0.2362, 0.5276, 0.2362], atol=5e-5)
    np.testing.assert_allclose(_run_selector(tiny, [1, 1, 1])[0][-1], [0.2056, 0.5888, 0.2056], atol=5e-5)
    preds, state = _run_selector(tiny, [1] + [None] * 5)
    np.testing.assert_allclose([p[1] for p in preds[1:]], [0.3814, 0.3678, 0.3578, 0.3507, 0.3456], atol=5e-5)
    np.testing.assert_allclose(state.belief_pred_IN[:, 1], 1 / 3, atol=1e-7)  # never observed: 1/3 forever


@pytest.mark.parametrize("decay", [0.1, 0.7, 1.0])
def test_one_observation_vector_for_every_decay(decay):
    assert abs(_p2_after([1], decay) - 0.4) < 1e-6


# --- selector path == log-space history filter ---------------------------------------------------------------
def test_selector_matches_history_filter():
    """Selector (lazy decay, scatter of observed rows) == log-space scan filter, per prompt. Binomial emission and
    the progress prior (seen-tracking on) exercise the general path; the deterministic one is covered below."""
    emission, prior = "binomial", "progress"
    N, B, T = 10, 3, 9
    sel = make_dps(N, B, decay=0.6, prior=prior, emission=emission)
    update = jax.jit(sel.update, static_argnums=3)
    state, _, _ = jax.jit(sel.select)(sel.init(jax.random.key(0)), jnp.arange(N, dtype=jnp.int32), jax.random.key(1))
    rng = np.random.default_rng(0)
    succ, seen = np.zeros((N, T), np.int32), np.zeros((N, T), bool)
    for t in range(T):
        ids = rng.choice(N, B, replace=False)
        c = rng.integers(0, K + 1, B)
        succ[ids, t], seen[ids, t] = c, True
        state = update(state, jnp.asarray(ids, jnp.int32), jnp.asarray(c, jnp.int32), K)
    ref = jax.jit(jax.vmap(lambda s, m: filter_history(s, m, K, a0=prior_counts(prior), decay=0.6,
                                                       emission=emission)))(jnp.asarray(succ), jnp.asarray(seen))
    np.testing.assert_allclose(state.belief_pred_IN.T, ref["pred_T3"][:, -1], atol=2e-5)


# --- invariants over random histories (hypothesis) -------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(decay=st.floats(0.05, 1.0), prior=st.sampled_from(["uniform", "progress", "stability", "local"]),
       obs=st.lists(st.sampled_from([None, 0, 1, 2]), min_size=1, max_size=12))
def test_invariants_simplex_stochastic_counts(decay, prior, obs):
    succ, seen = _history(obs, 12)
    a0 = prior_counts(prior)
    out = _filter(succ, seen, K, a0=a0, decay=decay)
    pred, filt, counts = (np.asarray(out[k]) for k in ("pred_T3", "filt_T3", "counts_T33"))
    assert np.isfinite(pred).all() and np.isfinite(counts).all()
    np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(filt.sum(-1), 1.0, atol=1e-5)
    assert (pred >= -1e-7).all() and (filt >= -1e-7).all()
    assert (counts >= a0 - 1e-5).all() and (a0 >= (1 - decay) * a0).all()
    p = np.asarray(transition_matrix(jnp.asarray(counts[-1])))
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(decay=st.floats(0.05, 1.0), gaps=st.lists(st.integers(0, 2), min_size=1, max_size=4),
       level=st.sampled_from([0, 2]))
def test_ranking_partial_over_unseen_over_extremes(decay, gaps, level):
    """Only-partial histories > never seen (1/3) > only-solved / only-unsolved, any decay and gaps."""
    def hist(state):
        out = []
        for g in gaps:
            out += [state] + [None] * g
        return out
    assert _p2_after(hist(1), decay) > 1 / 3 + 1e-6
    assert _p2_after(hist(level), decay) < 1 / 3 - 1e-6


def test_mixed_history_can_break_the_ranking():
    alternating = [1, 0] * 4 + [1]  # 9 observations ending partial
    assert abs(_p2_after(alternating, 1.0) - 0.18) < 0.01


# --- exact enumerated Bayes -------------------------------------------------------------------------------
def test_exact_when_observed_every_step_from_a_known_start():
    """decay 1, every step observed, z_0 known: counts = A0 + path transition counts, beliefs = exact Bayes."""
    a0 = prior_counts("uniform")
    for start in range(3):
        pi0 = np.eye(3)[start]
        for obs in itertools.product(range(3), repeat=4):
            succ, seen = _history(list(obs), 4)
            out = _filter(succ, seen, K, a0=a0, decay=1.0, initial_belief=tuple(pi0))
            exact, _ = exact_posterior(list(obs), a0, pi0)
            np.testing.assert_allclose(out["pred_T3"][-1], exact, atol=2e-6)
            path = (start,) + obs
            counts = a0.copy()
            for j, i in zip(path[:-1], path[1:]):
                counts[i, j] += 1
            np.testing.assert_allclose(out["counts_T33"][-1], counts, atol=1e-5)


@pytest.mark.parametrize("prior, tol", [("uniform", 0.075), ("progress", 0.1)])
def test_close_to_exact_bayes_with_gaps(prior, tol):
    """Gaps (and an unknown start) make the true posterior a Dirichlet mixture that DPS collapses to one
    Dirichlet per column. Tolerance = the measured worst case over all patterns with T <= 4 (0.067 uniform
    prior, 0.095 progress) plus headroom; fully observed histories are within 0.023 / 0.038."""
    a0 = prior_counts(prior)
    worst_full = 0.0
    for T in range(1, 5):
        for obs in itertools.product([None, 0, 1, 2], repeat=T):
            if all(o is None for o in obs):
                continue
            succ, seen = _history(list(obs), 4)
            out = _filter(succ, seen, K, a0=a0, decay=1.0)
            exact, _ = exact_posterior(list(obs), a0, UNIFORM)
            err = np.abs(np.asarray(out["pred_T3"][T - 1]) - exact).max()
            assert err < tol, (obs, err)
            if None not in obs:
                worst_full = max(worst_full, err)
    assert worst_full < 0.04


def test_binomial_emission_close_to_exact_bayes():
    a0, rates = prior_counts("uniform"), (0.05, 0.5, 0.95)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = rng.integers(0, K + 1, 4)
        out = _filter(jnp.asarray(c, jnp.int32), jnp.ones(4, bool), K, a0=a0, decay=1.0, emission="binomial",
                      rates=rates)
        exact, _ = exact_posterior(list(c), a0, UNIFORM, emission="binomial", n=K, rates=rates)
        assert np.abs(np.asarray(out["pred_T3"][-1]) - exact).max() < 0.08


def test_numpyro_model_log_density_is_exact():
    """The NumPyro model = Dirichlet prior on T + the forward-algorithm likelihood, equal to a path sum."""
    a0 = prior_counts("progress")
    cols = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.3, 0.6]])  # T_cols[j] = p(next | current j)
    succ, seen = jnp.array([0, 4, 8, 3]), jnp.array([True, False, True, True])
    rates = np.array([0.05, 0.5, 0.95])
    logd = jax.jit(lambda c: numpyro.infer.util.log_density(
        dps_hmm_model, (succ, seen, K, a0), {"emission": "binomial", "rates": tuple(rates)}, {"T_cols": c})[0])(
        jnp.asarray(cols, jnp.float32))
    brute = 0.0
    for path in itertools.product(range(3), repeat=5):
        p = 1 / 3
        for t in range(1, 5):
            p *= cols[path[t - 1], path[t]]
            if bool(seen[t - 1]):
                p *= stats.binom(K, rates[path[t]]).pmf(int(succ[t - 1]))
        brute += p
    prior = sum(stats.dirichlet(a0[:, j]).logpdf(cols[j]) for j in range(3))
    np.testing.assert_allclose(float(logd), prior + np.log(brute), rtol=1e-5)
    total, _ = jax.jit(hmm_log_marginal)(jnp.log(jnp.asarray(cols.T, jnp.float32)), jnp.log(jnp.full(3, 1 / 3)),
                                jnp.asarray(stats.binom(K, rates[None, :]).logpmf(np.asarray(succ)[:, None]),
                                            jnp.float32), seen)
    np.testing.assert_allclose(float(total), np.log(brute), rtol=1e-5)


# --- recovery of a known transition matrix (shared-P variant) -----------------------------------------------
TRUE_P = np.array([[0.6, 0.1, 0.05], [0.3, 0.6, 0.15], [0.1, 0.3, 0.8]])  # progress-shaped, [next, current]


def _recovery_run(prior, steps, N=1000, B=300, record_from=None):
    """Each prompt observed on 30% of steps; returns (max |P_hat - P| every 50 steps, predicted p2, realised)."""
    sel = make_dps(N, B, decay=1.0, shared_transitions=True, prior=prior)
    update = jax.jit(sel.update, static_argnums=3)
    state = sel.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    z, cum = rng.integers(0, 3, N), TRUE_P.cumsum(0)
    errors, pred_p2, realised = [], [], []
    for t in range(steps):
        z = (rng.random(N)[None, :] > cum[:, z]).sum(0)
        ids = rng.choice(N, B, replace=False)
        if record_from is not None and t >= record_from:
            pred_p2.append(np.asarray(state.belief_pred_IN[1, ids]))
            realised.append(z[ids] == 1)
        state = update(state, jnp.asarray(ids, jnp.int32), jnp.asarray(np.array([0, 4, 8])[z[ids]]), K)
        if t % 50 == 49:
            errors.append(np.abs(np.asarray(transition_matrix(state.counts_IJN[:, :, 0])) - TRUE_P).max())
    return errors, pred_p2, realised


def test_recovers_progress_shaped_transitions():
    """From a flat prior the online soft counts converge to the true P, slowly: counts made early under a wrong
    P persist at decay 1 (measured max error 0.16 / 0.12 / 0.11 / 0.095 / 0.088 / 0.081 at 50..300 steps)."""
    errors, _, _ = _recovery_run("uniform", 300)
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1


def test_true_transitions_are_a_fixed_point_and_p2_is_calibrated():
    errors, pred_p2, realised = _recovery_run(TRUE_P * 30.0, 100, record_from=50)
    assert max(errors) < 0.02, errors
    p2, hit = np.concatenate(pred_p2), np.concatenate(realised)
    bins = np.digitize(p2, [0.2, 0.35, 0.5])
    checked = 0
    for b in np.unique(bins):
        m = bins == b
        if m.sum() > 300:
            se = np.sqrt(p2[m].mean() * (1 - p2[m].mean()) / m.sum())
            assert abs(hit[m].mean() - p2[m].mean()) < 4 * se + 0.01
            checked += 1
    assert checked >= 2


# --- selector mechanics ------------------------------------------------------------------------------------
def test_ties_broken_at_random_and_deterministic_given_key(tiny):
    sel, select, update = tiny
    state = sel.init(jax.random.key(0))
    cand = jnp.arange(4, dtype=jnp.int32)
    picks = [int(select(state, cand, jax.random.key(s))[1][0]) for s in range(16)]  # all tied at 1/3
    assert len(set(picks)) >= 3
    assert picks[5] == int(select(state, cand, jax.random.key(5))[1][0])
    state = update(state, jnp.array([2]), jnp.array([4]), K)  # prompt 2 now last seen partial
    assert all(int(select(state, cand, jax.random.key(s))[1][0]) == 2 for s in range(4))


def test_entropy_term_changes_the_ranking(tiny):
    sel, select, update = tiny
    _, state = _run_selector(tiny, [1, 1])  # prompt 0: partial twice -> p2 0.528, entropy 1.024
    state = update(state, jnp.array([1]), jnp.array([4]), K)  # prompt 1: partial once -> p2 0.4, entropy 1.089
    cand = jnp.arange(4, dtype=jnp.int32)
    assert int(select(state, cand, jax.random.key(0))[1][0]) == 0
    with_entropy = make_dps(4, 1, decay=0.7, entropy_weight=5.0)
    assert int(jax.jit(with_entropy.select)(state, cand, jax.random.key(0))[1][0]) == 1


def test_update_compiles_once_and_runs_under_scan():
    sel = make_dps(50, 5, decay=0.7, prior="progress")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key):
        def step(state, k):
            k1, k2 = jax.random.split(k)
            state, ids, pred = sel.select(state, jnp.arange(50, dtype=jnp.int32), k1)
            c = jax.random.randint(k2, (5,), 0, K + 1)
            return sel.update(state, ids, c, K), pred.mean()
        return jax.lax.scan(step, sel.init(key), jax.random.split(key, 20))

    for s in range(3):
        state, means = run(jax.random.key(s))
        assert np.isfinite(np.asarray(means)).all() and int(state.step) == 20
        np.testing.assert_allclose(np.asarray(state.belief_pred_IN).sum(0), 1.0, atol=1e-5)
    again, _ = run(jax.random.key(2))  # deterministic given the key (checkpointable: a pytree of arrays)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)))
