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
