"""GPS per-prompt memory ([ours], memory=True) and the calibration ring behind test-time `predictive`.

One tiny GPS with memory (kappa 3, decay 0.5) is built per module; its select/update are jitted once behind
chex.assert_max_traces(n=1), so any retrace (e.g. a state shape or dtype that changes with the counts) fails.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.selection import gps as gps_lib

N, D, B, K, KAPPA, DECAY, C = 64, 6, 8, 8, 3.0, 0.5, 12
E = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
ALL = jnp.arange(N, dtype=jnp.int32)
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}  # test speed


@pytest.fixture(scope="module")
def gps():
    g = gps_lib.build_gps(E, batch_size=B, n_rollouts=K, preset="tiny", adam_steps=1, memory=True,
                          memory_kappa=KAPPA, memory_decay=DECAY, calibration_size=C)
    select = jax.jit(chex.assert_max_traces(g.selector.select, n=1), compiler_options=FAST_COMPILE)
    update = jax.jit(chex.assert_max_traces(g.selector.update, n=1), compiler_options=FAST_COMPILE)
    return g, select, update


@pytest.fixture(scope="module")
def stream(gps):
    """A fixed stream: batch t = prompts [4t, 4t + 8) (so half of each batch is new), counts from a seeded rng.
    Records the hand-computed decayed counts and the state after every update."""
    g, _, update = gps
    rng = np.random.default_rng(1)
    state = g.selector.init(jax.random.key(0))
    s_hand, f_hand = np.zeros(N), np.zeros(N)
    states, batches, counts, first = [state], [], [], []
    for t in range(5):
        sel = np.arange(4 * t, 4 * t + B)
        c = rng.integers(0, K + 1, B)
        first.append(s_hand[sel] + f_hand[sel] == 0)
        s_hand[sel] = DECAY * s_hand[sel] + c
        f_hand[sel] = DECAY * f_hand[sel] + (K - c)
        state = update(state, jnp.asarray(sel, jnp.int32), jnp.asarray(c, jnp.int32), K)
        states.append(state)
        batches.append(sel)
        counts.append(c)
    return dict(states=states, s=s_hand, f=f_hand, batches=batches, counts=counts, first=first)


def test_counts_decay_like_mopps_and_unselected_prompts_stay_bit_identical(stream):
    state = stream["states"][-1]
    np.testing.assert_allclose(np.asarray(state.successes_N), stream["s"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.failures_N), stream["f"], rtol=1e-6)
    # prompt 4 was selected at t = 0 (c0) and t = 1 (c1): s = decay * c0 + c1, by hand
    c0, c1 = stream["counts"][0][4], stream["counts"][1][0]
    assert float(state.successes_N[4]) == pytest.approx(DECAY * c0 + c1)
    assert float(state.failures_N[4]) == pytest.approx(DECAY * (K - c0) + (K - c1))
    before, after = stream["states"][-2], stream["states"][-1]
    untouched = np.setdiff1d(np.arange(N), stream["batches"][-1])
    np.testing.assert_array_equal(np.asarray(after.successes_N)[untouched], np.asarray(before.successes_N)[untouched])
    np.testing.assert_array_equal(np.asarray(after.failures_N)[untouched], np.asarray(before.failures_N)[untouched])


def test_unseen_prompts_get_plain_gps_and_seen_ones_the_beta_posterior_mean(gps, stream):
    g, select, _ = gps
    state, key = stream["states"][-1], jax.random.key(3)
    _, _, pred = select(state, ALL, key)
    plain = np.asarray(g.predict(state, jnp.asarray(E), key))  # Eq. 10 with the same z draws
    pred = np.asarray(pred)
    seen = (stream["s"] + stream["f"]) > 0
    assert seen.sum() == 24 and (~seen).sum() == N - 24
    np.testing.assert_allclose(pred[~seen], plain[~seen], rtol=1e-5, atol=1e-6)
    expected = (KAPPA * plain + stream["s"]) / (KAPPA + stream["s"] + stream["f"])  # documented formula
    np.testing.assert_allclose(pred[seen], expected[seen], rtol=1e-5, atol=1e-6)
    # memory moves predictions toward the observed rates: closer to s / (s + f) than plain GPS is
    rate = stream["s"][seen] / (stream["s"][seen] + stream["f"][seen])
    assert np.all(np.abs(pred[seen] - rate) <= np.abs(plain[seen] - rate) + 1e-6)
    assert np.abs(pred[seen] - rate).mean() < 0.5 * np.abs(plain[seen] - rate).mean()


def test_memory_off_is_plain_gps_on_seen_prompts_too(gps, stream):
    g, _, _ = gps
    plain = gps_lib.build_gps(E, batch_size=B, n_rollouts=K, preset="tiny", adam_steps=1, calibration_size=C)
    assert plain.hparams["memory"] is False  # the paper-faithful default
    state, key = stream["states"][-1], jax.random.key(4)
    _, _, pred = plain.selector.select(state, ALL, key)  # same state pytree structure: memory is a flag
    np.testing.assert_allclose(np.asarray(pred), np.asarray(g.predict(state, jnp.asarray(E), key)), rtol=1e-5,
                               atol=1e-6)


def test_state_shapes_are_static(gps, stream):
    g, select, _ = gps
    shapes = [jax.tree.map(lambda x: (x.shape, x.dtype), s) for s in stream["states"]]
    for s in shapes[1:]:
        chex.assert_trees_all_equal(s, shapes[0])
    assert stream["states"][0].successes_N.shape == (N,) and stream["states"][0].calib_pred_C.shape == (C,)
    select(stream["states"][0], ALL, jax.random.key(0))  # fresh and updated states hit one compiled select
    select(stream["states"][-1], ALL, jax.random.key(0))


def test_calibration_ring_keeps_first_observations_in_order(gps, stream):
    g, _, _ = gps
    state = stream["states"][-1]
    firsts = [c[f] for c, f in zip(stream["counts"], stream["first"])]  # 8 + 4 + 4 + 4 + 4 = 24 first observations
    assert int(state.calib_count) == sum(len(x) for x in firsts) == 24
    written = np.concatenate(firsts)
    ring = np.zeros(C)
    for i, c in enumerate(written):  # FIFO ring of capacity C
        ring[i % C] = c
    np.testing.assert_array_equal(np.asarray(state.calib_c_C), ring)
    np.testing.assert_array_equal(np.asarray(state.calib_n_C), np.full(C, K))
    # the stored prediction is Eq. 10 made before the batch's rollouts: at t = 0 (N(0, I) prior, fresh weights)
    first_batch = np.asarray(stream["states"][1].calib_pred_C[:B])
    key0 = jax.random.fold_in(stream["states"][0].svi_state.rng_key, 0)
    expected = g.predict(stream["states"][0], jnp.asarray(E[stream["batches"][0]]), key0)
    np.testing.assert_allclose(first_batch, np.asarray(expected), rtol=1e-5, atol=1e-6)
    nodes, weights = g.predictive(state, jnp.asarray(E[:10]), jax.random.key(1))
    assert nodes.shape == (10, weights.shape[0]) and bool(jnp.all((nodes >= 0) & (nodes <= 1)))
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(g.calibration(state).num_observations) == C


def test_bad_memory_options_raise():
    with pytest.raises(ValueError, match="memory_kappa"):
        gps_lib.make_gps(E, batch_size=B, memory=True, memory_kappa=0.0)
    with pytest.raises(ValueError, match="memory_decay"):
        gps_lib.make_gps(E, batch_size=B, memory=True, memory_decay=1.5)
    with pytest.raises(ValueError, match="memory must be True or False"):
        gps_lib.make_gps(E, batch_size=B, memory="yes")
