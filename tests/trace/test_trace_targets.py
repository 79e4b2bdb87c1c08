"""Subtree masks and V̂ (spec §6 property 5) against an explicit Python tree walk; predictor targets."""
import chex
import jax
import numpy as np
import pytest

from trace_tree_cases import TreeWalk
from lpo_jax.trace import targets as tg

_targets = jax.jit(lambda leaves: (tg.subtree_mask(leaves), tg.node_values(leaves, "leaves"),
                                   tg.node_values(leaves, "children")))


@pytest.fixture(scope="module")
def computed(trees):
    return [(a, leaves, *jax.device_get(_targets(leaves))) for a, leaves in trees]


def test_subtree_mask_membership(computed):
    for a, _, mask, *_ in computed:
        M, T = a["M"], a["T"]
        for p in range(a["P"]):
            for j in range(M):
                for t in range(T):
                    node_ok = a["root_valid"][p, j] and t < a["root_n"][p, j]
                    expect = np.zeros(a["L"], bool)
                    if node_ok:
                        expect[j] = True
                        conts = a["cvalid"][p] & (a["src"][p] == j) & (a["branch"][p] >= t)
                        expect[M:] = conts
                    assert np.array_equal(mask[p, j, t], expect), (p, j, t)
            # node (j, 0) covers root j and all of j's continuations
            for j in range(M):
                if a["root_valid"][p, j]:
                    assert mask[p, j, 0, M:].sum() == (a["cvalid"][p] & (a["src"][p] == j)).sum()


@pytest.mark.parametrize("mode", ["leaves", "children"])
def test_node_values_match_tree_walk(computed, mode):
    for a, leaves, _, nv_leaves, nv_children in computed:
        nv = nv_leaves if mode == "leaves" else nv_children
        for p in range(a["P"]):
            walk = TreeWalk(a, p)
            assert nv.value_P[p] == pytest.approx(walk.value("prompt"), abs=1e-6)  # root V̂ = mean of leaves
            assert nv.count_P[p] == len(walk.reward)
            for j in range(a["M"]):
                for t in range(a["T"]):
                    if nv.valid_PMT[p, j, t]:
                        node = ("R", j, t)
                        assert nv.value_PMT[p, j, t] == pytest.approx(walk.value(node, mode), abs=1e-5), (p, j, t)
                        assert nv.count_PMT[p, j, t] == len(walk.leaves_under(node))
                    else:
                        assert nv.value_PMT[p, j, t] == 0 and nv.count_PMT[p, j, t] == 0


def test_single_leaf_node_value_is_its_reward(computed):
    for a, _, _, nv, _ in computed:
        for p in range(a["P"]):
            for j in range(a["M"]):
                n = a["root_n"][p, j]
                if a["root_valid"][p, j] and nv.count_PMT[p, j, n - 1] == 1:
                    assert nv.value_PMT[p, j, n - 1] == a["root_r"][p, j]  # leaf V̂ = r


def test_path_values_and_predictor_targets(trees):
    fn = jax.jit(lambda leaves: (tg.path_values(leaves, tg.node_values(leaves)),
                                 tg.predictor_targets(leaves, tg.node_values(leaves))))
    for a, leaves in trees:
        (value, count), pt = jax.device_get(fn(leaves))
        chex.assert_shape(value, (a["P"], a["L"], a["T"] + 1))
        n_nodes = 0
        for p in range(a["P"]):
            walk = TreeWalk(a, p)
            n_nodes += sum(1 for l in walk.path for nd in walk.path[l] if nd[0] != "L" and
                           (nd[0] == "C" or nd[1] == l))  # each real non-leaf node, s >= 1, once
            for l, path in walk.path.items():
                assert value[p, l, 0] == pytest.approx(walk.value("prompt"), abs=1e-6)
                for s, node in enumerate(path, start=1):
                    assert value[p, l, s] == pytest.approx(walk.value(node), abs=1e-5)
                    assert count[p, l, s] == len(walk.leaves_under(node))
                    if s < a["T"] and pt.owner_PLT[p, l, s]:
                        assert pt.target_PLT[p, l, s] == pytest.approx(walk.value(node), abs=1e-5)
                        assert pt.weight_PLT[p, l, s] == len(walk.leaves_under(node))
        assert pt.owner_PLT.sum() == n_nodes
        assert np.all(pt.weight_PLT[~pt.owner_PLT] == 0)
        padded = ~np.asarray(leaves.leaf_valid_PL)
        assert np.all(value[padded] == 0) and np.all(pt.owner_PLT[padded] == 0)


def test_bad_mode_raises(trees):
    with pytest.raises(ValueError, match="target mode"):
        tg.node_values(trees[0][1], "median")


def test_direct_values_match_tree_walk(trees):
    """mode="direct": node (j, t) averages root j's reward and the continuations branched exactly at t;
    the prompt node averages its roots only."""
    fn = jax.jit(lambda leaves: tg.node_values(leaves, "direct"))
    for a, leaves in trees:
        nv = jax.device_get(fn(leaves))
        M = a["M"]
        for p in range(a["P"]):
            roots = [float(a["root_r"][p, j]) for j in range(M) if a["root_valid"][p, j]]
            assert nv.value_P[p] == pytest.approx(np.mean(roots), abs=1e-6) and nv.count_P[p] == len(roots)
            for j in range(M):
                for t in range(a["T"]):
                    if not (a["root_valid"][p, j] and t < a["root_n"][p, j]):
                        assert nv.value_PMT[p, j, t] == 0 and nv.count_PMT[p, j, t] == 0
                        continue
                    here = a["cvalid"][p] & (a["src"][p] == j) & (a["branch"][p] == t)
                    samples = [float(a["root_r"][p, j]), *a["cont_r"][p][here].tolist()]
                    assert nv.value_PMT[p, j, t] == pytest.approx(np.mean(samples), abs=1e-5), (p, j, t)
                    assert nv.count_PMT[p, j, t] == len(samples)


def test_direct_targets_unbiased_under_outcome_dependent_branching():
    """A TRACE-like rule (branch a failed root at a promising prefix, a successful one at an unpromising
    prefix) biases count-weighted subtree targets; direct targets stay unbiased: the pooled per-sample
    regression target of the prompt node and of each prefix type equals the true value V."""
    rng = np.random.default_rng(0)
    n, M, N, T = 4000, 2, 2, 2
    v_good, v_bad, p_good = 0.6, 0.05, 0.3
    good = rng.random((n, M)) < p_good                       # prefix after turn 1: promising or not
    v_pref = np.where(good, v_good, v_bad)
    root_r = (rng.random((n, M)) < v_pref).astype(np.float32)
    # branch N continuations at t = 1 of root j only when the outcome is likely to flip
    flip = ((root_r == 0) & good) | ((root_r == 1) & ~good)
    cvalid = np.repeat(flip, N, axis=1)
    src = np.repeat(np.arange(M)[None], n, 0).repeat(N, axis=1)
    cont_r = (rng.random((n, M * N)) < np.repeat(v_pref, N, axis=1)).astype(np.float32)
    from lpo_jax.trace.layout import make_tree_leaves
    leaves = make_tree_leaves(root_r, np.ones((n, M), bool), np.full((n, M), T), cont_r, cvalid,
                              src.astype(np.int32), np.ones((n, M * N), np.int32), np.full((n, M * N), T),
                              max_turns=T)
    true_v = p_good * v_good + (1 - p_good) * v_bad
    pooled = lambda value, count: float((value * count).sum() / count.sum())   # noqa: E731
    direct, subtree = (jax.device_get(tg.node_values(leaves, m)) for m in ("direct", "leaves"))
    se = np.sqrt(true_v * (1 - true_v) / (n * M))
    assert abs(pooled(direct.value_P, direct.count_P) - true_v) < 4 * se
    assert pooled(subtree.value_P, subtree.count_P) - true_v > 6 * se            # the bias direct removes
    for kind, v in ((good, v_good), (~good, v_bad)):
        value, count = direct.value_PMT[:, :, 1][kind], direct.count_PMT[:, :, 1][kind]
        se_k = np.sqrt(v * (1 - v) / count.sum())
        assert abs(pooled(value, count) - v) < 4 * se_k + 1e-3
