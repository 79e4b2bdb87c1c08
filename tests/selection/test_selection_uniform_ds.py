"""Uniform (epoch order) and DAPO dynamic sampling: filter, round accounting, the jitted loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.selection.dynamic_sampling import (DynamicSamplingConfig, ds_round_add, ds_round_done, ds_round_init,
                                                ds_train_mask, dynamic_sampling_step, filter_mixed,
                                                make_dynamic_sampling)
from lpo_jax.selection.uniform import make_uniform

N, B, K = 20, 6, 8


@pytest.fixture(scope="module")
def uniform():
    sel = make_uniform(N, B)
    return sel, jax.jit(sel.select)


def test_uniform_serves_each_prompt_once_per_epoch_then_reshuffles(uniform):
    sel, select = uniform
    state = sel.init(jax.random.key(0))
    cand = jnp.arange(N, dtype=jnp.int32)
    epochs = []
    for epoch in range(3):
        served = []
        for r in range(N // B):  # 3 batches of 6 = 18 of 20 prompts, then drop_last
            state, ids, pred = select(state, cand, jax.random.key(10 * epoch + r))
            served += np.asarray(ids).tolist()
            assert np.isnan(np.asarray(pred)).all()
        assert len(set(served)) == len(served) == 18
        assert int(state.epoch) == epoch
        epochs.append(served)
    assert epochs[0] != epochs[1]  # a new random order each epoch


def test_uniform_respects_candidates_and_key_determinism(uniform):
    sel, select = uniform
    state = sel.init(jax.random.key(1))
    cand = jnp.arange(0, N, 2, dtype=jnp.int32)[:B + 4]  # 10 even ids
    _, ids, _ = select(state, cand, jax.random.key(3))
    assert set(np.asarray(ids).tolist()) <= set(np.asarray(cand).tolist())
    _, ids2, _ = select(state, cand, jax.random.key(3))
    np.testing.assert_array_equal(ids, ids2)
    state2 = sel.update(state, ids, jnp.zeros((B,), jnp.int32), K)
    assert state2 is state  # update is a no-op


def test_filter_mixed_and_band():
    c = jnp.array([0, 1, 4, 7, 8])
    np.testing.assert_array_equal(filter_mixed(c, K), [False, True, True, True, False])
    np.testing.assert_array_equal(filter_mixed(c, K, 0.25, 0.75), [False, False, True, False, False])
    np.testing.assert_array_equal(filter_mixed(c, K, filter_min=0.5), [False, False, True, True, True])


def test_round_accounting_truncates_and_counts_every_rollout():
    cfg = DynamicSamplingConfig(max_num_gen_batches=3)
    rnd = ds_round_init(4)
    rnd = ds_round_add(rnd, jnp.array([10, 11, 12, 13]), jnp.array([0, 3, 8, 5]), K, cfg)  # keeps 11, 13
    assert int(rnd.num_kept) == 2 and not bool(ds_round_done(rnd, cfg))
    rnd = ds_round_add(rnd, jnp.array([20, 21, 22, 23]), jnp.array([2, 2, 2, 0]), K, cfg)  # 3 mixed, room for 2
    assert int(rnd.num_kept) == 4 and bool(ds_round_done(rnd, cfg))
    np.testing.assert_array_equal(rnd.kept_ids, [11, 13, 20, 21])
    np.testing.assert_array_equal(rnd.kept_successes, [3, 5, 2, 2])
    assert int(rnd.num_rollouts) == 2 * 4 * K and int(rnd.num_gen_batches) == 2
    np.testing.assert_array_equal(ds_train_mask(rnd), [True] * 4)


def test_round_gives_up_after_max_gen_batches():
    cfg = DynamicSamplingConfig(max_num_gen_batches=2)
    rnd = ds_round_init(4)
    for _ in range(2):
        rnd = ds_round_add(rnd, jnp.arange(4), jnp.array([0, 0, 8, 1]), K, cfg)
    assert bool(ds_round_done(rnd, cfg)) and int(rnd.num_kept) == 2
    np.testing.assert_array_equal(ds_train_mask(rnd), [True, True, False, False])
    assert int(rnd.num_rollouts) == 2 * 4 * K


def test_dynamic_sampling_step_jitted_loop():
    """The pure-rollout driver: keeps only mixed groups, spends rounds x B x n rollouts, respects the cap."""
    sel, cfg = make_dynamic_sampling(N, B, max_num_gen_batches=4)
    gamma = jnp.where(jnp.arange(N) % 4 == 0, 0.5, 0.0)  # 1 in 4 prompts can be mixed

    @jax.jit
    def step(state, key):
        rollout = lambda ids, k: jax.random.binomial(k, K, gamma[ids]).astype(jnp.int32)  # noqa: E731
        return dynamic_sampling_step(sel, state, jnp.arange(N, dtype=jnp.int32), key, rollout, K, cfg, B)

    state = sel.init(jax.random.key(0))
    for s in range(4):
        state, rnd, pred = step(state, jax.random.key(s))
        kept = np.asarray(rnd.kept_ids)[: int(rnd.num_kept)]
        assert (kept % 4 == 0).all()  # only prompts with gamma 0.5 can give mixed groups
        succ = np.asarray(rnd.kept_successes)[: int(rnd.num_kept)]
        assert ((succ > 0) & (succ < K)).all()
        assert 1 <= int(rnd.num_gen_batches) <= 4
        assert int(rnd.num_rollouts) == int(rnd.num_gen_batches) * B * K
        assert np.isnan(np.asarray(pred)).all()


def test_bad_ds_config():
    with pytest.raises(ValueError, match="max_num_gen_batches"):
        DynamicSamplingConfig(max_num_gen_batches=0)
    with pytest.raises(ValueError, match="filter_min"):
        DynamicSamplingConfig(filter_min=0.8, filter_max=0.2)
