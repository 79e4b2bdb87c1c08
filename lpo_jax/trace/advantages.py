"""Tree advantages (spec §2.2): `grpo_flat`, `tree_grpo`, `segment`, token broadcasting, LPO groups.

All functions are pure, static-shape and zero on padded leaves. Turn-level outputs are [P, L, T] with
index t-1 for (1-based) turn t; `token_advantages` maps them onto tokens through turn ids and the loss
mask (observations and padding get 0), giving the per-token advantage [P, L, S] the GRPO-style policy
losses take (flatten to [P*L, S] or reshape to groups as the trainer needs).

* `grpo_flat`: GRPO over all valid leaves of a prompt (baseline).
* `tree_grpo` (Tree-GRPO `adv_estimator=tree`): GRPO-normalize(r | prompt) + GRPO-normalize(r | tree),
  tree = root j and its continuations; (r - mean) / (std + eps), unbiased std, eps = 1e-6; a group of one
  leaf uses mean 0, std 1 (as Tree-GRPO; ``singleton="zero"`` gives it advantage 0 instead).
* `segment` (TreeRL / SPO style): turn t of leaf l gets r_l - V̂(node before turn t), V̂ from
  `targets.node_values` (node before turn 1 = the prompt node). ``shared="soft"`` (default): every leaf
  keeps its own copy of shared prefix turns; ``shared="hard"``: a shared turn is trained once, on the
  leaf that owns it (roots own their turns, continuations the turns after their branch point), with the
  mean advantage of the leaves through it, V̂(after) - V̂(before); copies get weight 0. Options:
  ``add_root_term`` adds (x - V̂_prompt) with x = r (soft) or V̂(after) (hard); ``sqrt_leaf_norm`` divides
  by sqrt(leaves under the node after the turn).

LPO on trees: LPO's listwise target needs groups of alternatives, i.e. leaves. `leaf_groups(level="prompt")`
gives one group per prompt over all its leaves (the analog of Tree-GRPO's prompt term); ``level="tree"``
one group per root tree (root + its continuations: the intra-tree, step-level-preference term). Apply
LPO's ``prepare`` per level on ``rewards_GK`` with ``valid_GK`` masking padded items, and map per-item
results back with `scatter_to_leaves`.
"""
from __future__ import annotations

import flax.struct
import jax.numpy as jnp

from lpo_jax.trace.layout import TreeLeaves
from lpo_jax.trace.targets import NodeValues, node_values, path_values

SHARED_MODES = ("soft", "hard")
SINGLETON_MODES = ("unit", "zero")
METHODS = ("grpo_flat", "tree_grpo", "segment")


def _group_normalize(r_PL, member_PGL, eps, ddof, singleton):
    """(r - mean_g) / (std_g + eps) for each leaf's group g (each valid leaf in exactly one group)."""
    if singleton not in SINGLETON_MODES:
        raise ValueError(f"singleton must be one of {SINGLETON_MODES}, got {singleton!r}")
    w = member_PGL.astype(jnp.float32)
    n = w.sum(-1)
    mean = (w * r_PL[:, None, :]).sum(-1) / jnp.maximum(n, 1.0)
    var = (w * (r_PL[:, None, :] - mean[..., None]) ** 2).sum(-1) / jnp.maximum(n - ddof, 1.0)
    std = jnp.sqrt(var)
    one = n == 1
    mean = jnp.where(one, 0.0 if singleton == "unit" else mean, mean)
    std = jnp.where(one, 1.0, std)
    mean_l = jnp.einsum("pgl,pg->pl", w, mean)
    std_l = jnp.einsum("pgl,pg->pl", w, std)
    return jnp.where(w.sum(1) > 0, (r_PL - mean_l) / (std_l + eps), 0.0)


def grpo_flat(leaves: TreeLeaves, *, eps: float = 1e-6, ddof: int = 1, singleton: str = "unit"):
    """GRPO advantage per leaf over all valid leaves of each prompt, [P, L]."""
    member = leaves.leaf_valid_PL[:, None, :]
    return _group_normalize(leaves.reward_PL.astype(jnp.float32), member, eps, ddof, singleton)


def tree_membership(leaves: TreeLeaves):
    """member[p, j, l]: valid leaf l belongs to root j's tree. bool [P, M, L]."""
    j = jnp.arange(leaves.num_roots)[None, :, None]
    return (leaves.src_root_PL[:, None, :] == j) & leaves.leaf_valid_PL[:, None, :]


def tree_grpo(leaves: TreeLeaves, *, eps: float = 1e-6, ddof: int = 1, singleton: str = "unit"):
    """Tree-GRPO advantage per leaf: prompt-group term + tree-group term, [P, L]."""
    r = leaves.reward_PL.astype(jnp.float32)
    prompt = _group_normalize(r, leaves.leaf_valid_PL[:, None, :], eps, ddof, singleton)
    tree = _group_normalize(r, tree_membership(leaves), eps, ddof, singleton)
    return prompt + tree


def segment(leaves: TreeLeaves, nv: NodeValues | None = None, *, shared: str = "soft",
            add_root_term: bool = False, sqrt_leaf_norm: bool = False):
    """Turn-level advantages and weights, each [P, L, T] (module docstring). nv defaults to node_values()."""
    if shared not in SHARED_MODES:
        raise ValueError(f"shared must be one of {SHARED_MODES}, got {shared!r}")
    nv = node_values(leaves) if nv is None else nv
    value, count = path_values(leaves, nv)                        # [P, L, T+1]
    before, after, n_after = value[..., :-1], value[..., 1:], count[..., 1:]
    r = leaves.reward_PL.astype(jnp.float32)[..., None]
    t = jnp.arange(1, leaves.max_turns + 1)[None, None, :]
    exists = leaves.leaf_valid_PL[..., None] & (t <= leaves.n_turns_PL[..., None])
    x = r if shared == "soft" else after
    adv = x - before
    if add_root_term:
        adv = adv + (x - nv.value_P[:, None, None])
    if sqrt_leaf_norm:
        adv = adv / jnp.sqrt(jnp.maximum(n_after, 1.0))
    if shared == "soft":
        weight = exists
    else:
        owned_from = jnp.where(leaves.is_cont_L[None, :], leaves.branch_t_PL + 1, 1)[..., None]
        weight = exists & (t >= owned_from)
    return jnp.where(weight, adv, 0.0), weight.astype(jnp.float32)


def leaf_to_turns(adv_PL, leaves: TreeLeaves):
    """Broadcast a per-leaf advantage over the leaf's turns -> (adv [P, L, T], weight [P, L, T])."""
    t = jnp.arange(1, leaves.max_turns + 1)[None, None, :]
    exists = leaves.leaf_valid_PL[..., None] & (t <= leaves.n_turns_PL[..., None])
    return jnp.where(exists, adv_PL[..., None], 0.0), exists.astype(jnp.float32)


def tree_advantages(leaves: TreeLeaves, method: str = "tree_grpo", **options):
    """One entry point: (adv [P, L, T], weight [P, L, T]) of `method` in METHODS; options go to it."""
    if method == "grpo_flat":
        return leaf_to_turns(grpo_flat(leaves, **options), leaves)
    if method == "tree_grpo":
        return leaf_to_turns(tree_grpo(leaves, **options), leaves)
    if method == "segment":
        return segment(leaves, **options)
    raise ValueError(f"unknown tree advantage {method!r}; choose one of {METHODS}")


def token_advantages(adv, turn_id_PLS, loss_mask_PLS, weight_PLT=None):
    """Per-token advantages and loss mask, each [P, L, S].

    adv: per-leaf [P, L] or per-turn [P, L, T]. turn_id: 1-based turn of each token (0 = prompt/padding).
    The returned mask is loss_mask & (turn_id >= 1) & (turn weight > 0); the advantage is 0 off the mask.
    """
    turn = jnp.asarray(turn_id_PLS, jnp.int32)
    mask = jnp.asarray(loss_mask_PLS, bool) & (turn >= 1)
    if adv.ndim == 2:
        tok = jnp.broadcast_to(adv[..., None], turn.shape)
    elif adv.ndim == 3:
        idx = jnp.clip(turn - 1, 0, adv.shape[-1] - 1)
        tok = jnp.take_along_axis(adv, idx, axis=-1)
        mask = mask & (turn <= adv.shape[-1])
        if weight_PLT is not None:
            mask = mask & (jnp.take_along_axis(weight_PLT, idx, axis=-1) > 0)
    else:
        raise ValueError(f"adv must be [P, L] or [P, L, T], got shape {adv.shape}")
    return jnp.where(mask, tok, 0.0), mask


@flax.struct.dataclass
class LeafGroups:
    """Groups of leaves for listwise objectives: rewards_GK, valid_GK, leaf_index_GK (into P*L)."""

    rewards_GK: jnp.ndarray
    valid_GK: jnp.ndarray
    leaf_index_GK: jnp.ndarray


def leaf_groups(leaves: TreeLeaves, level: str = "prompt") -> LeafGroups:
    """level="prompt": G = P groups of K = L leaves; level="tree": G = P*M groups of K = 1 + C (root j
    first, then its continuations in slot order, padding last)."""
    P, L = leaves.shape
    M = leaves.num_roots
    flat_index = jnp.arange(P)[:, None] * L + jnp.arange(L)[None, :]
    if level == "prompt":
        return LeafGroups(leaves.reward_PL.astype(jnp.float32), leaves.leaf_valid_PL, flat_index)
    if level != "tree":
        raise ValueError(f"level must be 'prompt' or 'tree', got {level!r}")
    member = tree_membership(leaves)[:, :, M:]                                          # [P, M, C]
    order = jnp.argsort(~member, axis=-1, stable=True)                                 # members first
    slot = jnp.concatenate([jnp.broadcast_to(jnp.arange(M)[None, :, None], (P, M, 1)), M + order], -1)
    valid = jnp.concatenate([leaves.root_valid_PM[..., None],
                             jnp.take_along_axis(member, order, axis=-1)], -1)
    rewards = jnp.take_along_axis(leaves.reward_PL[:, None, :].astype(jnp.float32), slot, axis=-1)
    index = jnp.take_along_axis(jnp.broadcast_to(flat_index[:, None, :], (P, M, L)), slot, axis=-1)
    K = L - M + 1
    return LeafGroups(jnp.where(valid, rewards, 0.0).reshape(P * M, K), valid.reshape(P * M, K),
                      index.reshape(P * M, K))


def scatter_to_leaves(values_GK, groups: LeafGroups, shape_PL):
    """Per-item group values back to leaf slots [P, L] (valid items only; others 0)."""
    P, L = shape_PL
    vals = jnp.where(groups.valid_GK, values_GK, 0.0).reshape(-1)
    return jnp.zeros((P * L,), vals.dtype).at[groups.leaf_index_GK.reshape(-1)].add(vals).reshape(P, L)
