"""Tree targets V̂ (spec §1.5): subtree masks, node values, per-path values and predictor targets.

Leaf V̂ = r. Node (j, t) (prefix of root j after t turns, 0 <= t < n_turns_j):
* ``mode="leaves"`` (default): mean reward over all valid leaves in its subtree (root j itself and the
  continuations of j with branch_t >= t);
* ``mode="children"``: mean of its children's V̂ (children: the next node on root j's path, or leaf j at
  the end, plus each continuation branching exactly at t, whose own path is a single leaf).
The prompt node: mean over all valid leaves of the prompt, in both modes. Nodes owned by a single
continuation (after its branch point) have V̂ = r of that continuation.

* ``mode="direct"`` [ours, for the predictor]: only the samples drawn from π *given that node's prefix*:
  node (j, t) averages root j's reward and the continuations branched exactly at t (count = 1 + their
  number); the prompt node averages its roots only (count = number of roots). Why: TRACE picks branch
  points from the roots' outcomes (after a failure it continues promising prefixes, after a success lucky
  ones), so a continuation branched below a node is not a π-sample from that node; the subtree mean then
  pulls hard prompts' targets up and easy prompts' down (toward 0.5), and stage 1 mistakes hard prompts
  for mid-difficulty ones. As count-weighted MSE rows are a per-sample regression, direct targets have
  V^π(H) as their population minimiser whatever rule chose the branch points.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from lpo_jax.trace.layout import TreeLeaves

TARGET_MODES = ("leaves", "children", "direct")


@flax.struct.dataclass
class NodeValues:
    """value_PMT / count_PMT (leaves under the node) / valid_PMT; prompt-node value_P, count_P."""

    value_PMT: jnp.ndarray
    count_PMT: jnp.ndarray
    valid_PMT: jnp.ndarray
    value_P: jnp.ndarray
    count_P: jnp.ndarray


def node_valid(leaves: TreeLeaves):
    """Node (j, t) exists: root j valid and t < n_turns_j. bool [P, M, T]."""
    t = jnp.arange(leaves.max_turns)[None, None, :]
    return leaves.root_valid_PM[..., None] & (t < leaves.root_n_turns_PM[..., None])


def subtree_mask(leaves: TreeLeaves):
    """mask[p, j, t, l]: valid leaf l lies under node (j, t). bool [P, M, T, L]."""
    M, T = leaves.num_roots, leaves.max_turns
    j = jnp.arange(M)[None, :, None, None]
    t = jnp.arange(T)[None, None, :, None]
    l = jnp.arange(leaves.shape[1])[None, None, None, :]
    src = leaves.src_root_PL[:, None, None, :]
    cont = leaves.is_cont_L[None, None, None, :] & (src == j) & (leaves.branch_t_PL[:, None, None, :] >= t)
    under = ((l == j) | cont) & leaves.leaf_valid_PL[:, None, None, :]
    return under & node_valid(leaves)[..., None]


def _prompt_value(leaves):
    w = leaves.leaf_valid_PL.astype(jnp.float32)
    count = w.sum(-1)
    return (w * leaves.reward_PL).sum(-1) / jnp.maximum(count, 1.0), count


def node_values(leaves: TreeLeaves, mode: str = "leaves") -> NodeValues:
    """V̂ of every node (module docstring); invalid nodes get value 0, count 0."""
    if mode not in TARGET_MODES:
        raise ValueError(f"target mode must be one of {TARGET_MODES}, got {mode!r}")
    valid = node_valid(leaves)
    if mode == "direct":
        return _direct_values(leaves, valid)
    mask = subtree_mask(leaves).astype(jnp.float32)
    count = mask.sum(-1)
    if mode == "leaves":
        value = (mask * leaves.reward_PL[:, None, None, :]).sum(-1) / jnp.maximum(count, 1.0)
    else:
        value = _children_values(leaves, valid)
    value_P, count_P = _prompt_value(leaves)
    return NodeValues(jnp.where(valid, value, 0.0), count, valid, value_P, count_P)


def _branch_sums(leaves):
    """(sum of rewards, count) of the valid continuations branched exactly at node (j, t), each [P, M, T]."""
    M, T = leaves.num_roots, leaves.max_turns
    is_cont = leaves.is_cont_L[None, :] & leaves.leaf_valid_PL
    src_1h = jax.nn.one_hot(leaves.src_root_PL, M, dtype=jnp.float32) * is_cont[..., None]   # [P, L, M]
    at_t = jax.nn.one_hot(leaves.branch_t_PL, T, dtype=jnp.float32)                           # [P, L, T]
    return (jnp.einsum("plm,plt,pl->pmt", src_1h, at_t, leaves.reward_PL),
            jnp.einsum("plm,plt->pmt", src_1h, at_t))


def _direct_values(leaves: TreeLeaves, valid_PMT) -> NodeValues:
    cont_sum, cont_cnt = _branch_sums(leaves)
    count = jnp.where(valid_PMT, 1.0 + cont_cnt, 0.0)
    value = (leaves.root_reward_PM[..., None] + cont_sum) / jnp.maximum(count, 1.0)
    w = leaves.root_valid_PM.astype(jnp.float32)
    count_P = w.sum(-1)
    value_P = (w * leaves.root_reward_PM).sum(-1) / jnp.maximum(count_P, 1.0)
    return NodeValues(jnp.where(valid_PMT, value, 0.0), count, valid_PMT, value_P, count_P)


def _children_values(leaves: TreeLeaves, valid_PMT):
    T = leaves.max_turns
    cont_sum, cont_cnt = _branch_sums(leaves)
    n_turns, r_root = leaves.root_n_turns_PM, leaves.root_reward_PM

    def step(next_value, t):  # next_value: V̂ of node (j, t+1) (or leaf j) for every j, [P, M]
        child = jnp.where(t + 1 < n_turns, next_value, r_root)
        value = (child + cont_sum[:, :, t]) / (1.0 + cont_cnt[:, :, t])
        return value, value

    _, values = jax.lax.scan(step, r_root, jnp.arange(T), reverse=True)   # [T, P, M]
    return jnp.where(valid_PMT, jnp.moveaxis(values, 0, -1), 0.0)


def _shared_upto(leaves):
    """Last turn count s at which leaf l's path is still on a root node: roots n-1, continuations branch_t."""
    return jnp.where(leaves.is_cont_L[None, :], leaves.branch_t_PL, leaves.n_turns_PL - 1)


def path_values(leaves: TreeLeaves, nv: NodeValues):
    """(value, count) of the node after s turns on each leaf's path, s = 0..T, each [P, L, T+1].

    s = 0: the prompt node; 1 <= s <= shared: root node (src, s); later: the leaf's own path (r, count 1).
    """
    T = leaves.max_turns
    s = jnp.arange(T + 1)[None, None, :]
    shared = (s >= 1) & (s <= _shared_upto(leaves)[..., None])
    idx = jnp.broadcast_to(jnp.clip(s, 0, T - 1), (*leaves.shape, T + 1))
    src = leaves.src_root_PL[..., None]
    root_v = jnp.take_along_axis(jnp.take_along_axis(nv.value_PMT, src, axis=1), idx, axis=-1)
    root_c = jnp.take_along_axis(jnp.take_along_axis(nv.count_PMT, src, axis=1), idx, axis=-1)
    value = jnp.where(s == 0, nv.value_P[:, None, None], jnp.where(shared, root_v, leaves.reward_PL[..., None]))
    count = jnp.where(s == 0, nv.count_P[:, None, None], jnp.where(shared, root_c, 1.0))
    valid = leaves.leaf_valid_PL[..., None]
    return jnp.where(valid, value, 0.0), jnp.where(valid, count, 0.0)


@flax.struct.dataclass
class PredictorTargets:
    """Rows for the success predictor, one per real non-leaf node, located on an owner leaf's path.

    target_PLT / weight_PLT / owner_PLT [P, L, T]: node after s turns (s = 0..T-1) of leaf l; owner marks
    the one copy of each node with 1 <= s < n_turns (roots own their path, continuations own the turns
    after their branch point); weight = leaves under the node. Prompt rows: target_P, weight_P.
    """

    target_PLT: jnp.ndarray
    weight_PLT: jnp.ndarray
    owner_PLT: jnp.ndarray
    target_P: jnp.ndarray
    weight_P: jnp.ndarray


def predictor_targets(leaves: TreeLeaves, nv: NodeValues) -> PredictorTargets:
    value, count = path_values(leaves, nv)
    T = leaves.max_turns
    s = jnp.arange(T)[None, None, :]
    first_owned = jnp.where(leaves.is_cont_L[None, :], leaves.branch_t_PL + 1, 1)[..., None]
    owner = leaves.leaf_valid_PL[..., None] & (s >= first_owned) & (s < leaves.n_turns_PL[..., None])
    return PredictorTargets(value[..., :T], jnp.where(owner, count[..., :T], 0.0), owner, nv.value_P, nv.count_P)
