"""Bandit-tree MDP: closed-form V^π vs Monte Carlo; one TRACE step in static shapes (spec §6 props 6, 7, 10, 11)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax import trace as tr

P, M, N, T, A = 32, 4, 2, 4, 3
B_ROOT, N_KEYS = 64, 12


@pytest.fixture(scope="module")
def bandit():
    make = jax.jit(tr.make_bandit_tree, static_argnums=(1, 2, 3), static_argnames=("min_turns",))
    return make(jax.random.PRNGKey(0), P, T, A, min_turns=2)


@jax.jit
def _steps(keys, bt):
    """TRACE step (stage 1 on exact prompt values) with both stage-2 expansions, for each key (vmapped)."""
    m = tr.allocate_roots(tr.prompt_values(bt), B_ROOT, M)

    def one(key, expansion):
        leaves, actions, K = tr.bandit_tree_rollout(key, bt, m, M=M, N=N, expansion=expansion)
        return leaves, actions, K, tr.mixed_subtree_rate(leaves, K), tr.tree_cost(leaves)

    return m, {e: jax.vmap(lambda k: one(k, e))(keys) for e in ("trace", "random")}


def test_closed_form_values_match_monte_carlo(bandit):
    K = 4096
    fn = jax.jit(tr.sample_paths)
    prefix = jnp.zeros((P, K, T), jnp.int32).at[:, :, 0].set(1)   # prefix: action 1 at the first turn
    acts, r = fn(jax.random.PRNGKey(1), bandit, prefix, jnp.zeros((P, K), jnp.int32))
    v, mc = np.asarray(tr.prompt_values(bandit)), np.asarray(r.mean(1))
    assert np.all(np.abs(mc - v) <= 4 * np.sqrt(v * (1 - v) / K) + 1e-3)
    assert not np.all(np.asarray(acts)[:, :, 0] == 1)  # branch_t = 0: nothing copied
    acts1, r1 = fn(jax.random.PRNGKey(2), bandit, prefix, jnp.ones((P, K), jnp.int32))
    assert np.all(np.asarray(acts1)[:, :, 0] == 1)    # branch_t = 1: first action copied
    v1 = np.asarray(tr.prefix_values(bandit, prefix[:, :1], jnp.ones((P, 1), jnp.int32)))[:, 0]
    mc1 = np.asarray(r1.mean(1))
    assert np.all(np.abs(mc1 - v1) <= 4 * np.sqrt(v1 * (1 - v1) / K) + 1e-3)


def test_tree_step_invariants(bandit):
    """One test on purpose: the vmapped rollouts compile once per worker (pytest-xdist splits modules)."""
    keys = jax.random.split(jax.random.PRNGKey(5), N_KEYS)
    m, runs = jax.device_get(_steps(keys, bandit))
    _check_copy_budget_cost(m, runs["trace"])
    _check_equal_cost_flat_baseline(runs["trace"])
    # stage 2 by exact V beats random node choice on mixed subtrees, at the same budget
    trace_rate, random_rate = runs["trace"][3].mean(), runs["random"][3].mean()
    assert trace_rate > random_rate, (trace_rate, random_rate)
    np.testing.assert_array_equal(runs["trace"][4]["trajectories"], runs["random"][4]["trajectories"])
    # property 11: fixed keys reproduce every array; different keys give different draws
    again = jax.device_get(_steps(keys, bandit))
    jax.tree.map(np.testing.assert_array_equal, again, (m, runs))
    assert not np.array_equal(runs["trace"][0].reward_PL[0], runs["trace"][0].reward_PL[1])


def _check_copy_budget_cost(m, run):
    leaves, actions, K, _, cost = run
    for k in range(N_KEYS):
        src, bt, valid, n = (np.asarray(x[k]) for x in (leaves.src_root_PL, leaves.branch_t_PL,
                                                         leaves.leaf_valid_PL, leaves.n_turns_PL))
        for p, l in zip(*np.nonzero(valid[:, M:])):
            b, j = bt[p, M + l], src[p, M + l]
            assert 1 <= b < n[p, j] and valid[p, j]                                     # a real prefix
            np.testing.assert_array_equal(actions[k, p, M + l, :b], actions[k, p, j, :b])  # copied turns 1..b
        # budget (property 7): no shortfall since every root has n_turns >= 2
        assert valid.sum() == (m * (1 + N)).sum() == B_ROOT * (1 + N)
        assert np.array_equal(K[k].sum((1, 2)), m * N)
        assert cost["trajectories"][k] == valid.sum()
        assert cost["generated_turns"][k] == np.where(valid, n - bt, 0).sum() < valid.sum() * T


def _check_equal_cost_flat_baseline(run):
    """A flat-GRPO config with B_flat = B_root (1 + N) trajectories matches TRACE's logged counter."""
    B_flat, group = B_ROOT * (1 + N), 8
    m_flat = jax.jit(tr.allocate_roots_uniform, static_argnums=(2, 3))(jax.random.PRNGKey(0), jnp.ones(P, bool),
                                                                        B_flat, group)
    assert int(m_flat.sum()) == B_flat == run[4]["trajectories"][0]
    assert set(np.unique(np.asarray(m_flat))) <= {0, group}
