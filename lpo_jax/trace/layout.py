"""Static tree layout shared by TRACE targets, advantages, metrics and rollouts (spec §2.1).

Per prompt p there are L = M + C leaf slots: slots 0..M-1 are roots (full episodes from the prompt),
slots M..L-1 continuations (C = M N). A continuation copies turns 1..branch_t of root `src_root`
(observations included) and generates turns branch_t+1..n_turns itself. Nodes are (j, t): the prefix of
root j after t turns, 0 <= t < T; node (j, 0) is root j's *tree* (Tree-GRPO's tree uid), the prompt itself
is the separate prompt node. Turns are 1-based in token annotations (turn_id 0 = prompt / padding).
"""
from __future__ import annotations

import flax.struct
import jax.numpy as jnp


@flax.struct.dataclass
class TreeLeaves:
    """Leaf-slot arrays [P, L] (roots first) and the static sizes M (roots per prompt) and T (max turns).

    reward_PL: float outcome of each leaf (any real value; binary for TRACE targets).
    leaf_valid_PL: bool, slot holds a real episode.
    src_root_PL: int32 root index j the leaf hangs from (roots: their own index).
    branch_t_PL: int32 number of turns copied from the source root (roots: 0).
    n_turns_PL: int32 total turns of the episode (copied + generated), 1..T.
    """

    reward_PL: jnp.ndarray
    leaf_valid_PL: jnp.ndarray
    src_root_PL: jnp.ndarray
    branch_t_PL: jnp.ndarray
    n_turns_PL: jnp.ndarray
    num_roots: int = flax.struct.field(pytree_node=False)
    max_turns: int = flax.struct.field(pytree_node=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.reward_PL.shape)

    @property
    def is_cont_L(self):
        return jnp.arange(self.shape[1]) >= self.num_roots

    @property
    def root_valid_PM(self):
        return self.leaf_valid_PL[:, : self.num_roots]

    @property
    def root_reward_PM(self):
        return self.reward_PL[:, : self.num_roots]

    @property
    def root_n_turns_PM(self):
        return self.n_turns_PL[:, : self.num_roots]


def make_tree_leaves(root_reward_PM, root_valid_PM, root_n_turns_PM, cont_reward_PC, cont_valid_PC,
                     cont_src_root_PC, cont_branch_t_PC, cont_n_turns_PC, *, max_turns: int) -> TreeLeaves:
    """Concatenates root and continuation arrays into a `TreeLeaves` (validates shapes)."""
    P, M = jnp.shape(root_reward_PM)
    C = jnp.shape(cont_reward_PC)[1] if jnp.ndim(cont_reward_PC) == 2 else -1
    for name, x, shape in (("root_valid_PM", root_valid_PM, (P, M)), ("root_n_turns_PM", root_n_turns_PM, (P, M)),
                           ("cont_valid_PC", cont_valid_PC, (P, C)), ("cont_src_root_PC", cont_src_root_PC, (P, C)),
                           ("cont_branch_t_PC", cont_branch_t_PC, (P, C)), ("cont_reward_PC", cont_reward_PC, (P, C)),
                           ("cont_n_turns_PC", cont_n_turns_PC, (P, C))):
        if tuple(jnp.shape(x)) != shape:
            raise ValueError(f"{name} has shape {tuple(jnp.shape(x))}, expected {shape} ([P, M] roots, [P, C] "
                             "continuations)")
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    cat = lambda a, b, dt: jnp.concatenate([jnp.asarray(a, dt), jnp.asarray(b, dt)], axis=1)
    roots = jnp.broadcast_to(jnp.arange(M, dtype=jnp.int32), (P, M))
    return TreeLeaves(
        reward_PL=cat(root_reward_PM, cont_reward_PC, jnp.float32),
        leaf_valid_PL=cat(root_valid_PM, cont_valid_PC, bool),
        src_root_PL=cat(roots, cont_src_root_PC, jnp.int32),
        branch_t_PL=cat(jnp.zeros((P, M), jnp.int32), cont_branch_t_PC, jnp.int32),
        n_turns_PL=cat(root_n_turns_PM, cont_n_turns_PC, jnp.int32),
        num_roots=int(M), max_turns=int(max_turns))
