"""GPS selector end to end (spec §7 items 13, 14, 17 and the selector contract).

One tiny GPS (preset "tiny") is built per module and its select/update are jitted once behind
chex.assert_max_traces(n=1): every test reuses them, so any retrace across steps fails the run.
"""
import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from lpo_jax.selection import gps as gps_lib
from lpo_jax.selection import make_selector
from lpo_jax.selection.base import Selector
from lpo_jax.selection.test_time import allocate_test_samples

N_TRAIN, N_HELD, D, B, K, W = 256, 128, 8, 32, 8, 4
_RNG = np.random.default_rng(0)
E = _RNG.normal(size=(N_TRAIN + N_HELD, D)).astype(np.float32)
_W = _RNG.normal(size=D)
_W /= np.linalg.norm(_W)
TRAIN, HELD = jnp.arange(N_TRAIN), np.arange(N_TRAIN, N_TRAIN + N_HELD)


def true_gamma(idx, t):
    """gamma_tau(t) = sigmoid(w . e_tau + drift(t)): difficulty is a function of the embedding, plus drift."""
    return 1.0 / (1.0 + np.exp(-(2.0 * (E[idx] @ _W) - 0.5 + 0.01 * t)))


@pytest.fixture(scope="module")
def gps():
    # adam_steps=2 (default 8) keeps the 60-step fixture cheap; replay and everything else at the defaults
    g = gps_lib.build_gps(E, batch_size=B, n_rollouts=K, preset="tiny", history_window=W, adam_steps=2)
    select = jax.jit(chex.assert_max_traces(g.selector.select, n=1))
    update = jax.jit(chex.assert_max_traces(g.selector.update, n=1))
    return g, select, update


@pytest.fixture(scope="module")
def trained(gps):
    """60 RL steps on the training pool: select -> simulated Binomial(K, gamma) -> update."""
    g, select, update = gps
    rng = np.random.default_rng(1)
    state, key = g.selector.init(jax.random.key(0)), jax.random.key(1)
    alpha, beta = np.ones(N_TRAIN + N_HELD), np.ones(N_TRAIN + N_HELD)  # per-prompt Beta(1, 1) baseline
    losses, batches = [], []
    for t in range(60):
        key, k_select = jax.random.split(key)
        state, selected, pred = select(state, TRAIN, k_select)
        sel = np.asarray(selected)
        c = rng.binomial(K, true_gamma(sel, t))
        state = update(state, selected, jnp.asarray(c, jnp.int32), K)
        alpha[sel] += c
        beta[sel] += K - c
        losses.append(float(state.neg_elbo))
        batches.append(sel)
    return dict(state=state, losses=np.asarray(losses), alpha=alpha, beta=beta, batches=batches, last_pred=pred)


def test_generalises_to_held_out_prompts_where_per_prompt_model_cannot(gps, trained):
    g, _, _ = gps
    state = trained["state"]
    assert not np.isin(HELD, np.concatenate(trained["batches"])).any()  # held-out prompts were never trained
    pred_held = np.asarray(g.predict(state, jnp.asarray(E[HELD]), jax.random.key(5)))
    rho = spearmanr(pred_held, true_gamma(HELD, 60)).statistic
    assert rho > 0.5, rho
    samples = np.asarray(allocate_test_samples(jnp.asarray(pred_held), 4 * N_HELD))  # test-time use
    assert samples.sum() == 4 * N_HELD and (samples >= 0).all()
    beta_mean = trained["alpha"][HELD] / (trained["alpha"][HELD] + trained["beta"][HELD])
    np.testing.assert_array_equal(beta_mean, 0.5)  # a per-prompt model stays at its prior: no ranking at all
    # and the per-prompt model did learn the prompts it saw (it is a working baseline)
    seen = np.unique(np.concatenate(trained["batches"]))
    seen_mean = trained["alpha"][seen] / (trained["alpha"][seen] + trained["beta"][seen])
    assert spearmanr(seen_mean, true_gamma(seen, 60)).statistic > 0.5


def test_neg_elbo_finite_and_decreasing_on_a_fixed_stream(gps):
    """Fixed stream: pre-drawn batches and counts from a stationary gamma (no selection in the loop)."""
    g, _, update = gps
    rng = np.random.default_rng(2)
    state = g.selector.init(jax.random.key(3))
    losses = []
    for _ in range(60):
        sel = rng.choice(N_TRAIN, B, replace=False)
        c = rng.binomial(K, true_gamma(sel, 0))
        state = update(state, jnp.asarray(sel, jnp.int32), jnp.asarray(c, jnp.int32), K)
        losses.append(float(state.neg_elbo))
    losses = np.asarray(losses)
    assert np.isfinite(losses).all()
    assert losses[-15:].mean() < 0.85 * losses[:15].mean(), (losses[:15].mean(), losses[-15:].mean())


def test_select_contract(gps, trained):
    g, select, _ = gps
    state, selected, pred = select(trained["state"], TRAIN, jax.random.key(9))
    sel = np.asarray(selected)
    assert sel.shape == (B,) and sel.dtype == np.int32 and len(np.unique(sel)) == B and (sel < N_TRAIN).all()
    assert pred.shape == (N_TRAIN,) and bool(jnp.all((pred >= 0) & (pred <= 1)))
    chex.assert_trees_all_equal(state, trained["state"])  # GPS keeps its randomness in the key argument
    assert np.isfinite(trained["losses"]).all() and isinstance(g.selector, Selector)


def test_history_ring_and_last_batch(trained):
    state, batches = trained["state"], trained["batches"]
    assert int(state.step) == 60 and bool(state.has_last) and bool(state.hist_valid_W.all())
    np.testing.assert_array_equal(np.asarray(state.last_idx_B), batches[-1])
    for t in range(60 - W, 60):
        np.testing.assert_array_equal(np.asarray(state.hist_idx_WB[t % W]), batches[t])


def test_empty_history_gives_standard_normal_prior_predictive(gps):
    g, _, _ = gps
    state = g.selector.init(jax.random.key(4))
    assert not bool(state.has_last)
    key = jax.random.key(8)
    pred = g.predict(state, jnp.asarray(E[HELD]), key)
    z = jax.random.normal(key, (g.hparams["num_pred_samples"], g.net_config.z_dim))  # z ~ N(0, I)
    decode = jax.jit(lambda p, e, z: gps_lib.gps_model.apply_networks(p, g.networks).decoder(e, z))
    expected = jax.nn.sigmoid(decode(g.params(state), g.inputs_ND[HELD], z)).mean(0)
    np.testing.assert_allclose(np.asarray(pred), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_deterministic_given_keys_and_checkpointable(gps):
    g, select, update = gps

    def run(seed):
        state = g.selector.init(jax.random.key(seed))
        picks = []
        for t in range(3):
            state, sel, _ = select(state, TRAIN, jax.random.key(100 + t))
            state = update(state, sel, jnp.full((B,), 3, jnp.int32), K)
            picks.append(np.asarray(sel))
        return state, np.stack(picks)

    (s1, p1), (s2, p2), (s3, _) = run(0), run(0), run(1)
    np.testing.assert_array_equal(p1, p2)
    chex.assert_trees_all_equal(g.params(s1), g.params(s2))
    assert not np.array_equal(np.asarray(g.params(s1)["decoder$params"]["b_in"]),
                              np.asarray(g.params(s3)["decoder$params"]["b_in"]))
    # the whole state (params, Adam moments, PRNG key, ring) round-trips through bytes and resumes identically
    restored = flax.serialization.from_bytes(s1, flax.serialization.to_bytes(s1))
    after_restore = update(restored, jnp.asarray(p1[0]), jnp.full((B,), 5, jnp.int32), K)
    after_original = update(s1, jnp.asarray(p1[0]), jnp.full((B,), 5, jnp.int32), K)
    chex.assert_trees_all_equal(g.params(after_restore), g.params(after_original))


def test_thompson_variant_single_draw():
    g = gps_lib.build_gps(E, batch_size=B, preset="tiny", num_pred_samples=1)
    state = g.selector.init(jax.random.key(0))
    a = g.predict(state, jnp.asarray(E[:40]), jax.random.key(1))
    b = g.predict(state, jnp.asarray(E[:40]), jax.random.key(2))
    assert a.shape == (40,) and not np.allclose(np.asarray(a), np.asarray(b))  # one z per call: a posterior draw


def test_bad_inputs_raise_clear_errors(gps, trained):
    g, _, _ = gps
    with pytest.raises(ValueError, match=r"shape \[N, d\]"):
        gps_lib.make_gps(E[0], batch_size=4)
    with pytest.raises(ValueError, match=r"shape \[N, d\]"):
        gps_lib.make_gps(E[None], batch_size=4)
    with pytest.raises(ValueError, match=r"shape \[N, d\]"):
        gps_lib.make_gps(E.astype(np.int32), batch_size=4)
    with pytest.raises(ValueError, match="NaN"):
        gps_lib.make_gps(np.full((4, 2), np.nan, np.float32), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        gps_lib.make_gps(E[:10], batch_size=11)
    with pytest.raises(TypeError, match="unknown GPS hyperparameters"):
        gps_lib.make_gps(E, batch_size=4, lamda_div=1.0)
    with pytest.raises(ValueError, match="preset"):
        gps_lib.make_gps(E, batch_size=4, preset="huge")
    with pytest.raises(ValueError, match="num_prompts=5"):  # through the registry, as the harness calls it
        make_selector("gps", embeddings=E, batch_size=4, num_prompts=5)
    state = trained["state"]
    with pytest.raises(ValueError, match="larger than the candidate set"):
        g.selector.select(state, TRAIN[: B - 1], jax.random.key(0))
    with pytest.raises(ValueError, match="batch_size=32"):
        g.selector.update(state, TRAIN[: B - 1], jnp.zeros(B - 1, jnp.int32), K)
    with pytest.raises(ValueError, match=r"\[0, n=8\]"):
        g.selector.update(state, TRAIN[:B], jnp.full((B,), 9, jnp.int32), K)
    with pytest.raises(ValueError, match="duplicate"):
        g.selector.update(state, jnp.zeros(B, jnp.int32), jnp.zeros(B, jnp.int32), K)


def test_replay_steps_train_on_the_pairs_of_earlier_rl_steps(gps):
    """Default replay, G Adam steps per update: step g trains on the (batch t-g-1, batch t-g) pair (the prior is
    N(0, I) for batch 0); steps before batch 0 are skipped. Checked against explicit svi.update calls."""
    g, _, update = gps
    G = g.hparams["adam_steps"]
    assert g.hparams["replay"] and G >= 2
    rng = np.random.default_rng(5)
    batches = [jnp.asarray(rng.choice(N_TRAIN, B, replace=False), jnp.int32) for _ in range(3)]
    counts = [jnp.asarray(rng.integers(0, K + 1, B), jnp.int32) for _ in range(3)]
    svi_update = jax.jit(g.svi.update)
    states = [g.selector.init(jax.random.key(0))]
    for t in range(3):
        states.append(update(states[-1], batches[t], counts[t], K))
        expected = states[-2].svi_state
        for step in range(G):
            cur, prev = t - step, max(t - step - 1, 0)
            if cur < 0:
                break
            expected, _ = svi_update(expected, g.inputs_ND[batches[prev]], counts[prev] / K, cur >= 1,
                                     g.inputs_ND[batches[cur]], counts[cur].astype(jnp.float32), jnp.float32(K))
        chex.assert_trees_all_close(g.params(states[-1]), g.svi.get_params(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(states[-1].replay_idx_RB[:3]), np.stack(batches))
