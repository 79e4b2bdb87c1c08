"""Tree advantages (spec §6 property 8; §2.2): Tree-GRPO port, segment vs tree walk, tokens, LPO groups."""
import statistics

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trace_tree_cases import TreeWalk
from lpo_jax.trace import advantages as adv


def _tree_grpo_reference(a, p, eps=1e-6):
    """Port of Tree-GRPO's compute_advantage(adv_estimator=tree) semantics on one prompt's flat leaf list:
    GRPO-normalize(score | prompt uid) + GRPO-normalize(score | tree uid); size-1 group: mean 0, std 1;
    torch.std (unbiased)."""
    M = a["M"]
    leaves = [(j, j, float(a["root_r"][p, j])) for j in range(M) if a["root_valid"][p, j]]
    leaves += [(M + c, int(a["src"][p, c]), float(a["cont_r"][p, c]))
               for c in range(a["L"] - M) if a["cvalid"][p, c]]

    def normalize(groups):
        out = {}
        for members in groups.values():
            scores = [s for _, s in members]
            mean, std = (0.0, 1.0) if len(scores) == 1 else (statistics.mean(scores), statistics.stdev(scores))
            out.update({l: (s - mean) / (std + eps) for l, s in members})
        return out

    by_prompt = {0: [(l, s) for l, _, s in leaves]}
    by_tree = {}
    for l, tree, s in leaves:
        by_tree.setdefault(tree, []).append((l, s))
    prompt_term, tree_term = normalize(by_prompt), normalize(by_tree)
    flat = {l: s for l, s in normalize(by_prompt).items()}
    return {l: prompt_term[l] + tree_term[l] for l in prompt_term}, flat


_leaf_methods = jax.jit(lambda leaves: (adv.tree_grpo(leaves), adv.grpo_flat(leaves),
                                        adv.tree_grpo(leaves, singleton="zero")))


def test_tree_grpo_and_flat_match_reference(trees):
    for a, leaves in trees:
        tree_a, flat_a, _ = jax.device_get(_leaf_methods(leaves))
        for p in range(a["P"]):
            ref_tree, ref_flat = _tree_grpo_reference(a, p)
            for l in range(a["L"]):
                if l in ref_tree:
                    assert tree_a[p, l] == pytest.approx(ref_tree[l], rel=1e-4, abs=1e-4)
                    assert flat_a[p, l] == pytest.approx(ref_flat[l], rel=1e-4, abs=1e-4)
                else:
                    assert tree_a[p, l] == 0 and flat_a[p, l] == 0  # zero on padding


_segment_all = jax.jit(lambda leaves: {
    (shared, root, sq): adv.segment(leaves, shared=shared, add_root_term=root, sqrt_leaf_norm=sq)
    for shared in ("soft", "hard") for root in (False, True) for sq in (False, True)})


def test_all_equal_groups_contribute_zero(trees):
    _, base = trees[0]
    leaves = base.replace(reward_PL=jnp.ones_like(base.reward_PL))      # same shapes: compiled functions reused
    a_tree, a_flat, _ = jax.device_get(_leaf_methods(leaves))
    member = np.asarray(adv.tree_membership(leaves))                       # [P, M, L]
    tree_size = np.einsum("pml,pml->pl", member, member.sum(-1, keepdims=True).repeat(member.shape[-1], -1))
    in_group = tree_size >= 2
    assert in_group.any() and (~in_group & np.asarray(leaves.leaf_valid_PL)).any()
    np.testing.assert_array_equal(a_tree[in_group], 0.0)
    # a one-leaf tree is not a group: Tree-GRPO gives it (r - 0) / (1 + eps) (see test_singleton_tree_convention)
    np.testing.assert_allclose(a_tree[~in_group], np.where(np.asarray(leaves.leaf_valid_PL), 1 / (1 + 1e-6),
                                                            0.0)[~in_group], rtol=1e-6)  # float32 rounding
    np.testing.assert_array_equal(a_flat, 0.0)
    a_seg, _ = jax.device_get(_segment_all(leaves)[("soft", False, False)])
    np.testing.assert_array_equal(a_seg, 0.0)


def test_singleton_tree_convention(trees):
    _, base = trees[0]
    M = base.num_roots
    roots_only = base.replace(leaf_valid_PL=base.leaf_valid_PL.at[:, M:].set(False),
                              reward_PL=jnp.ones_like(base.reward_PL))
    unit, _, zero = jax.device_get(_leaf_methods(roots_only))
    valid = np.asarray(roots_only.leaf_valid_PL)
    # prompt term 0 (all equal) + tree term of a one-leaf tree: (r - 0) / (1 + eps) (Tree-GRPO)
    np.testing.assert_allclose(unit[valid], 1.0 / (1 + 1e-6), rtol=1e-6)
    np.testing.assert_array_equal(unit[~valid], 0.0)
    np.testing.assert_array_equal(zero, 0.0)


def test_segment_matches_tree_walk(trees):
    for a, leaves in trees[:4]:
        out = jax.device_get(_segment_all(leaves))
        for (shared, root, sq), (A, W) in out.items():
            for p in range(a["P"]):
                walk = TreeWalk(a, p)
                v_prompt = walk.value("prompt")
                for l in range(a["L"]):
                    n = len(walk.path[l]) if l in walk.path else 0
                    for t in range(1, a["T"] + 1):
                        if t > n:
                            assert A[p, l, t - 1] == 0 and W[p, l, t - 1] == 0
                            continue
                        before, after = walk.value(walk.node_before(l, t)), walk.value(walk.node_after(l, t))
                        x = walk.reward[l] if shared == "soft" else after
                        expect = (x - before) + ((x - v_prompt) if root else 0.0)
                        if sq:
                            expect /= np.sqrt(len(walk.leaves_under(walk.node_after(l, t))))
                        owner = shared == "soft" or l < a["M"] or t > a["branch"][p, l - a["M"]]
                        assert W[p, l, t - 1] == float(owner)
                        assert A[p, l, t - 1] == pytest.approx(expect if owner else 0.0, abs=1e-5), \
                            (shared, root, sq, p, l, t)


def test_hard_mode_trains_each_shared_turn_once(trees):
    for a, leaves in trees:
        _, W = jax.device_get(_segment_all(leaves)[("hard", False, False)])
        for p in range(a["P"]):
            walk = TreeWalk(a, p)
            distinct_turns = {walk.node_after(l, t) for l in walk.path for t in range(1, len(walk.path[l]) + 1)}
            assert W[p].sum() == len(distinct_turns)


class TokenAdvantagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_turn_ids_and_masks(self):
        fn = self.variant(adv.token_advantages)
        A_PLT = jnp.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
        W_PLT = jnp.array([[[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]])
        turn = jnp.array([[[0, 1, 1, 2, 2, 3, 0], [0, 1, 2, 2, 3, 3, 3]]])
        loss = jnp.array([[[0, 1, 1, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1, 1]]], bool)  # 0 = observation / prompt
        tok, mask = fn(A_PLT, turn, loss, W_PLT)
        np.testing.assert_array_equal(tok, [[[0, 1, 1, 2, 0, 3, 0], [0, 0, 5, 0, 6, 6, 6]]])
        np.testing.assert_array_equal(mask, tok != 0)
        tok_leaf, mask_leaf = fn(jnp.array([[7.0, -1.0]]), turn, loss)
        np.testing.assert_array_equal(tok_leaf, [[[0, 7, 7, 7, 0, 7, 0], [0, -1, -1, 0, -1, -1, -1]]])


def test_tree_advantages_entry_point(trees):
    a, leaves = trees[0]
    for method in adv.METHODS:
        A, W = jax.jit(lambda x: adv.tree_advantages(x, method))(leaves)
        chex.assert_shape((A, W), (a["P"], a["L"], a["T"]))
        assert np.all(np.asarray(A)[np.asarray(W) == 0] == 0)
    with pytest.raises(ValueError, match="unknown tree advantage"):
        adv.tree_advantages(leaves, "ppo")
    with pytest.raises(ValueError, match="shared"):
        adv.segment(leaves, shared="medium")


def test_leaf_groups_and_scatter(trees):
    fn = jax.jit(lambda leaves: (adv.leaf_groups(leaves, "prompt"), adv.leaf_groups(leaves, "tree")))
    for a, leaves in trees:
        g_prompt, g_tree = jax.device_get(fn(leaves))
        r = np.asarray(leaves.reward_PL) * np.asarray(leaves.leaf_valid_PL)
        for g in (g_prompt, g_tree):
            np.testing.assert_allclose(adv.scatter_to_leaves(g.rewards_GK, g, r.shape), r)
            assert g.valid_GK.sum() == np.asarray(leaves.leaf_valid_PL).sum()  # each valid leaf in one group
        M, K = a["M"], a["L"] - a["M"] + 1
        assert g_tree.rewards_GK.shape == (a["P"] * M, K)
        for p in range(a["P"]):
            for j in range(M):
                members = {int(i) % a["L"] for i, ok in zip(g_tree.leaf_index_GK[p * M + j], g_tree.valid_GK[p * M + j])
                           if ok}
                expect = {j} if a["root_valid"][p, j] else set()
                expect |= {M + c for c in range(a["L"] - M) if a["cvalid"][p, c] and a["src"][p, c] == j}
                assert members == expect
