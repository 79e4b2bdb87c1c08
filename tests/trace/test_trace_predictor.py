"""Shared success predictor (spec §6 property 9): online MSE vs true V^π falls on the bandit tree; range,
padding, warm start, FIFO replay, pytree state."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax import trace as tr
from lpo_jax.trace import predictor as pr

P, M, N, T, A = 8, 4, 2, 3, 3
B_ROOT, STEPS = 16, 12
CFG = pr.PredictorConfig(feature_dim=P + T * A, hidden=32, max_turns=T, lr=1e-2, n_updates=8, batch_size=64,
                         buffer_size=512)
SMALL = pr.PredictorConfig(feature_dim=3, hidden=8, max_turns=T, n_updates=1, batch_size=4, buffer_size=4, n_warm=2)


def _node_features(bt, actions_PKT, t_PK):
    """phi of the prefix after t actions: one-hot (prompt, path) as the 'hidden state', turn = searches = t."""
    h = tr.path_features(bt, actions_PKT, t_PK)
    return pr.features(h.reshape(-1, h.shape[-1]), t_PK.reshape(-1), t_PK.reshape(-1), T).reshape(*t_PK.shape, -1)


@functools.partial(jax.jit, static_argnums=0)
def rl_step(cfg, state, bt, key):
    k_roll, k_pred = jax.random.split(key)
    empty = jnp.zeros((P, 1, T), jnp.int32)
    x_prompt = _node_features(bt, empty, jnp.zeros((P, 1), jnp.int32))[:, 0]
    m = tr.allocate_roots(pr.predict(cfg, state, x_prompt), B_ROOT, M)

    def value_fn(actions, t_PMT):
        x = jax.vmap(lambda t: _node_features(bt, actions, t), in_axes=-1, out_axes=2)(t_PMT)  # [P, M, T, F]
        return pr.predict(cfg, state, x.reshape(-1, x.shape[-1])).reshape(t_PMT.shape)

    leaves, actions, _ = tr.bandit_tree_rollout(k_roll, bt, m, M=M, N=N, value_fn=value_fn)
    targets = tr.predictor_targets(leaves, tr.node_values(leaves))
    L = leaves.shape[1]
    s = jnp.broadcast_to(jnp.arange(T), (P, L, T))
    x_nodes = jax.vmap(lambda t: _node_features(bt, actions, t), in_axes=-1, out_axes=2)(s)        # [P, L, T, F]
    x = jnp.concatenate([x_nodes.reshape(-1, cfg.in_dim), x_prompt])
    y = jnp.concatenate([targets.target_PLT.reshape(-1), targets.target_P])
    w = jnp.concatenate([targets.weight_PLT.reshape(-1), targets.weight_P])
    valid = jnp.concatenate([targets.owner_PLT.reshape(-1), targets.weight_P > 0])
    return pr.predictor_step(cfg, state, x, y, w, valid, k_pred)


@jax.jit
def _eval_nodes(key_bt, key_paths):
    """Bandit instance + evaluation nodes (prompts and every prefix of 16 paths per prompt) with exact V^π."""
    bt = tr.make_bandit_tree(key_bt, P, T, A)
    acts, _ = tr.sample_paths(key_paths, bt, jnp.zeros((P, 16, T), jnp.int32), jnp.zeros((P, 16), jnp.int32))
    t = jnp.broadcast_to(jnp.arange(T), (P, 16, T))
    x_eval = jax.vmap(lambda tt: _node_features(bt, acts, tt), in_axes=-1, out_axes=2)(t).reshape(-1, CFG.in_dim)
    v_eval = jax.vmap(lambda tt: tr.prefix_values(bt, acts, tt), in_axes=-1, out_axes=-1)(t).reshape(-1)
    ok = (t < bt.n_turns_P[:, None, None]).reshape(-1)
    return bt, x_eval, v_eval, ok


@pytest.fixture(scope="module")
def setup():
    return _eval_nodes(jax.random.PRNGKey(3), jax.random.PRNGKey(4))


@pytest.mark.parametrize("ensemble", (1, 3))
def test_mse_vs_true_value_falls_online(setup, ensemble):
    bt, x_eval, v_eval, ok = setup
    cfg = dataclasses.replace(CFG, ensemble=ensemble)
    mse = jax.jit(lambda params: tr.weighted_mse(pr.predict_raw(params, x_eval), v_eval, ok))
    state = _init(cfg, jax.random.PRNGKey(0))
    history = [float(mse(state.params))]
    for i in range(STEPS):
        state, metrics = rl_step(cfg, state, bt, jax.random.PRNGKey(100 + i))
        history.append(float(mse(state.params)))
    assert int(state.rl_steps) == STEPS and int(metrics["n_buffer"]) > 0
    print("predictor MSE vs true V:", np.round(history[::3], 4))
    assert np.mean(history[-5:]) < 0.5 * history[0], history
    v = np.asarray(pr.predict(cfg, state, x_eval))
    assert np.all((v >= 0) & (v <= 1))


_init = jax.jit(pr.predictor_init, static_argnums=0)


def test_padded_rows_are_ignored():
    cfg = SMALL
    state = _init(cfg, jax.random.PRNGKey(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, cfg.in_dim)), jnp.float32)
    y, w = jnp.full((6,), 0.25), jnp.ones((6,))
    valid = jnp.array([True, False, True, False, False, True])
    s1, _ = pr.predictor_step(cfg, state, x, y, w, valid, jax.random.PRNGKey(2))
    garbage_y = jnp.where(valid, y, 1e6)                            # padded targets must not matter
    garbage_x = jnp.where(valid[:, None], x, jnp.nan)
    s2, _ = pr.predictor_step(cfg, state, garbage_x, garbage_y, w, valid, jax.random.PRNGKey(2))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(s1), jax.device_get(s2))
    assert int(s1.buf_valid.sum()) == 3 and int(s1.write_pos) == 3
    np.testing.assert_array_equal(s1.buf_x[:3], x[np.array([0, 2, 5])])
    assert float(jax.jit(pr.loss_fn)(state.params, x, y, jnp.zeros(6))) == 0.0  # zero weight -> zero loss


def test_ensemble_members_are_independent_and_averaged():
    """[ours] E members: own inits, own minibatches, no shared parameters; predict = members' mean."""
    cfg = dataclasses.replace(SMALL, ensemble=4, n_warm=1, batch_size=8, buffer_size=16)
    state = _init(cfg, jax.random.PRNGKey(0))
    assert state.params["w1"].shape == (4, cfg.in_dim, cfg.hidden)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(6, cfg.in_dim)), jnp.float32)
    np.testing.assert_array_equal(pr.predict_members(cfg, state, x), 0.5)      # warm start: every member
    state, _ = pr.predictor_step(cfg, state, x, jnp.asarray(rng.random(6), jnp.float32), jnp.ones(6),
                                 jnp.ones(6, bool), jax.random.PRNGKey(1))
    v_E = np.asarray(pr.predict_members(cfg, state, x))
    assert v_E.shape == (4, 6) and np.all(np.ptp(v_E, axis=0) > 1e-3)          # members differ
    np.testing.assert_allclose(pr.predict(cfg, state, x), v_E.mean(0), rtol=1e-6)
    # the ensemble loss is the sum of the members' own losses, so each member's gradient is its own
    xb = jnp.asarray(rng.normal(size=(4, 5, cfg.in_dim)), jnp.float32)
    yb, wb = jnp.asarray(rng.random((4, 5)), jnp.float32), jnp.asarray(rng.random((4, 5)), jnp.float32)
    grads = jax.grad(pr.loss_fn)(state.params, xb, yb, wb)
    for e in range(4):
        member = jax.tree.map(lambda a: a[e], state.params)
        own = jax.grad(pr.member_loss)(member, xb[e], yb[e], wb[e])
        jax.tree.map(lambda g, o: np.testing.assert_allclose(g[e], o, rtol=1e-5, atol=1e-7), grads, own)
    with pytest.raises(ValueError, match="ensemble"):
        pr.PredictorConfig(feature_dim=3, ensemble=0)


def test_fifo_ring_keeps_latest_rows():
    cfg = SMALL
    push = jax.jit(pr.push, static_argnums=0)
    state = _init(cfg, jax.random.PRNGKey(0))
    x = jnp.arange(6 * cfg.in_dim, dtype=jnp.float32).reshape(6, cfg.in_dim)
    state = push(cfg, state, x[:3], jnp.arange(3.0), jnp.ones(3), jnp.ones(3, bool))
    state = push(cfg, state, x[3:], jnp.arange(3.0, 6.0), jnp.ones(3), jnp.ones(3, bool))
    assert sorted(np.asarray(state.buf_y).tolist()) == [2.0, 3.0, 4.0, 5.0] and int(state.write_pos) == 2
    state = push(cfg, state, x, jnp.arange(10.0, 16.0), jnp.ones(6), jnp.ones(6, bool))   # more than capacity
    assert sorted(np.asarray(state.buf_y).tolist()) == [12.0, 13.0, 14.0, 15.0]


def test_warm_start_and_state_is_a_pytree():
    cfg = SMALL
    state = _init(cfg, jax.random.PRNGKey(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, cfg.in_dim)), jnp.float32)
    np.testing.assert_array_equal(pr.predict(cfg, state, x), 0.5)
    for i in range(2):
        state, _ = pr.predictor_step(cfg, state, x, jnp.ones(6), jnp.ones(6), jnp.ones(6, bool), jax.random.PRNGKey(i))
    assert not np.allclose(pr.predict(cfg, state, x), 0.5)
    leaves, treedef = jax.tree.flatten(state)
    restored = jax.tree.unflatten(treedef, [np.asarray(l) for l in leaves])  # e.g. after a checkpoint round trip
    np.testing.assert_array_equal(pr.predict(cfg, restored, x), pr.predict(cfg, state, x))
    with pytest.raises(ValueError, match="features must be"):
        pr.predict(cfg, state, x[:, :-1])
    with pytest.raises(ValueError, match="loss"):
        pr.PredictorConfig(feature_dim=4, loss="l1")


def test_prompt_share_balances_minibatch_weights():
    cfg = pr.PredictorConfig(feature_dim=3, hidden=4, max_turns=T, prompt_share=0.25)
    x = jnp.zeros((6, cfg.in_dim)).at[:, 3].set(jnp.array([0.0, 0.0, 1.0, 2.0, 1.0, 0.0]) / T)
    w = jnp.array([2.0, 1.0, 3.0, 1.0, 0.0, 0.0])             # last row: a padded prompt row
    out = np.asarray(pr.balance_prompt_rows(cfg, x, w))
    assert out[[0, 1, 5]].sum() == pytest.approx(0.25) and out[[2, 3, 4]].sum() == pytest.approx(0.75)
    np.testing.assert_allclose(out[[0, 1]] / out[1], [2.0, 1.0])   # proportions within a group kept
    assert out[4] == 0 and out[5] == 0
    only_prefix = np.asarray(pr.balance_prompt_rows(cfg, x, w.at[:2].set(0.0)))
    assert only_prefix[[2, 3]].sum() == pytest.approx(0.75) and only_prefix[:2].sum() == 0
    np.testing.assert_array_equal(pr.balance_prompt_rows(cfg.__class__(feature_dim=3, max_turns=T), x, w), w)
    with pytest.raises(ValueError, match="prompt_share"):
        pr.PredictorConfig(feature_dim=3, prompt_share=1.0)
