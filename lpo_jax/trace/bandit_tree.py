"""Bandit-tree MDP (spec §5, no LM): exact V^π for testing allocation, targets, advantages, predictor.

Prompt p has n_p turns; at turn s (0-based) the policy picks action a ~ pi[p, s]; the episode succeeds
with probability prod_s p[p, s, a_s] (reward ~ Bernoulli of the path product). Hence, with
mu[p, s] = sum_a pi p, the value of a prefix of t actions is

    V^π(p, a_<t) = prod_{s<t} p[p, s, a_s] * prod_{t<=s<n_p} mu[p, s]      (t = 0: the prompt's value).

`bandit_tree_rollout` runs the full TRACE pipeline of one step in static shapes (roots from `m_P`,
candidate prefixes scored by a value function, per-prompt continuation allocation, continuations that
copy the source's first branch_t actions and sample the rest) and returns `TreeLeaves` + actions.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from lpo_jax.trace import allocation
from lpo_jax.trace.allocation import uniform_flat
from lpo_jax.trace.layout import make_tree_leaves

EXPANSIONS = ("trace", "random")


@flax.struct.dataclass
class BanditTree:
    p_PTA: jnp.ndarray      # success factor of action a at turn s
    pi_PTA: jnp.ndarray     # policy probabilities
    n_turns_P: jnp.ndarray  # episode length, 1..T

    @property
    def shape(self):
        return self.p_PTA.shape


def make_bandit_tree(key, P: int, T: int, A: int, *, min_turns: int = 1, spread: float = 1.5,
                     policy_temp: float = 1.0) -> BanditTree:
    """Random instance whose prompt values spread over (0, 1): p = sigmoid(logit(e^(1/n)) + spread z)."""
    if not 1 <= min_turns <= T or A < 1:
        raise ValueError(f"need A >= 1 and 1 <= min_turns <= T, got A={A}, min_turns={min_turns}, T={T}")
    k_n, k_e, k_z, k_g = jax.random.split(key, 4)
    n = min_turns + jnp.floor(uniform_flat(k_n, (P,)) * (T + 1 - min_turns)).astype(jnp.int32)
    ease = (0.02 + 0.96 * uniform_flat(k_e, (P,))) ** (1.0 / n)
    normal = lambda k: jax.scipy.special.ndtri(jnp.clip(uniform_flat(k, (P, T, A)), 1e-6, 1 - 1e-6))
    p = jax.nn.sigmoid(jax.scipy.special.logit(ease)[:, None, None] + spread * normal(k_z))
    pi = jax.nn.softmax(normal(k_g) / policy_temp, -1)
    return BanditTree(p, pi, n.astype(jnp.int32))


def _turn_means(bt: BanditTree):
    """mu[p, s] for s < n_p, 1 beyond (so products over all T are correct)."""
    mu = (bt.pi_PTA * bt.p_PTA).sum(-1)
    return jnp.where(jnp.arange(bt.shape[1])[None, :] < bt.n_turns_P[:, None], mu, 1.0)


def prompt_values(bt: BanditTree):
    """V^π of each prompt, [P]."""
    return _turn_means(bt).prod(-1)


def prefix_values(bt: BanditTree, actions_PKT, t_PK):
    """V^π after the first t actions of each path (actions [P, K, T] int, t [P, K] int) -> [P, K]."""
    P, T, _ = bt.shape
    s = jnp.arange(T)[None, None, :]
    p_taken = jnp.take_along_axis(bt.p_PTA[:, None, :, :], actions_PKT[..., None], axis=-1)[..., 0]
    mu = _turn_means(bt)[:, None, :]
    t = jnp.asarray(t_PK)[..., None]
    n = bt.n_turns_P[:, None, None]
    factor = jnp.where(s < jnp.minimum(t, n), p_taken, jnp.where(s < n, mu, 1.0))
    return factor.prod(-1)


def sample_paths(key, bt: BanditTree, prefix_PKT, branch_t_PK):
    """Copies the first branch_t actions of `prefix`, samples the rest -> (actions [P, K, T], reward [P, K])."""
    P, K, T = prefix_PKT.shape
    u = uniform_flat(key, (P, K, T + 1))
    cdf = jnp.cumsum(bt.pi_PTA, -1)[:, None, :, :-1]                                   # [P, 1, T, A-1]
    fresh = (u[..., :T, None] >= cdf).sum(-1)                                            # inverse CDF
    s = jnp.arange(T)[None, None, :]
    actions = jnp.where(s < jnp.asarray(branch_t_PK)[..., None], prefix_PKT, fresh).astype(jnp.int32)
    success = prefix_values(bt, actions, jnp.broadcast_to(bt.n_turns_P[:, None], (P, K)))
    reward = (u[..., T] < success).astype(jnp.float32)
    return actions, reward


def bandit_tree_rollout(key, bt: BanditTree, m_P, *, M: int, N: int, value_fn=None,
                        expansion: str = "trace"):
    """One static-shape tree step -> (TreeLeaves, actions [P, L, T], K [P, M, T]).

    Roots: slots j < m_P[p]. Stage 2: ``expansion="trace"`` scores candidate prefixes with
    ``value_fn(actions_PMT, t_PMT) -> Vp [P, M, T]`` (default: exact `prefix_values`) and allocates
    m_p N continuations by `allocation.allocate_prefixes`; ``"random"`` draws N uniform candidates per root.
    """
    if expansion not in EXPANSIONS:
        raise ValueError(f"expansion must be one of {EXPANSIONS}, got {expansion!r}")
    P, T, _ = bt.shape
    C = M * N
    k_root, k_alloc, k_cont = jax.random.split(key, 3)
    zeros = jnp.zeros((P, M, T), jnp.int32)
    root_actions, root_reward = sample_paths(k_root, bt, zeros, jnp.zeros((P, M), jnp.int32))
    root_valid = jnp.arange(M)[None, :] < jnp.asarray(m_P)[:, None]
    root_n = jnp.broadcast_to(bt.n_turns_P[:, None], (P, M))
    cand = allocation.prefix_candidates(root_valid, root_n, T)
    if expansion == "trace":
        t_PMT = jnp.broadcast_to(jnp.arange(T), (P, M, T))
        if value_fn is None:
            vp = jax.vmap(lambda t: prefix_values(bt, root_actions, t), in_axes=-1, out_axes=-1)(t_PMT)
        else:
            vp = value_fn(root_actions, t_PMT)
        gains = allocation.prefix_gains(vp, root_reward, cand, Kmax=C)
        K = allocation.allocate_prefixes(gains, m_P, N, key=k_alloc)
    else:
        K = allocation.allocate_prefixes_random(k_alloc, cand, root_valid, N)
    src, branch, valid = allocation.continuation_slots(K, C)
    prefix = jnp.take_along_axis(root_actions, src[..., None], axis=1)
    cont_actions, cont_reward = sample_paths(k_cont, bt, prefix, branch)
    cont_n = jnp.broadcast_to(bt.n_turns_P[:, None], (P, C))
    leaves = make_tree_leaves(root_reward, root_valid, root_n, cont_reward, valid, src, branch, cont_n,
                              max_turns=T)
    return leaves, jnp.concatenate([root_actions, cont_actions], 1), K


def path_features(bt: BanditTree, actions_PKT, t_PK):
    """One-hot (prompt, first t actions) features for predictor tests, [P, K, P + T * A]."""
    P, T, A = bt.shape
    K = actions_PKT.shape[1]
    s = jnp.arange(T)[None, None, :]
    path = jax.nn.one_hot(actions_PKT, A) * (s < jnp.asarray(t_PK)[..., None])[..., None]
    prompt = jnp.broadcast_to(jnp.eye(P)[:, None, :], (P, K, P))
    return jnp.concatenate([prompt, path.reshape(P, K, T * A)], -1)
