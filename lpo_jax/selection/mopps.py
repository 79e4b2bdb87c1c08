"""MoPPS: Beta-Bernoulli bandit per prompt with forgetting, Thompson-sampled acquisition (spec §4).

Model (NumPyro view): gamma ~ Beta(alpha, beta), c ~ Binomial(n, gamma). Only selected prompts update:
    alpha <- decay * alpha + (1 - decay) * alpha0 + c,   beta <- decay * beta + (1 - decay) * beta0 + (n - c)
decay = 1 is exact conjugacy; decay < 1 is a power-prior heuristic. Unselected prompts stay bit-identical.

Acquisition, one Thompson draw per candidate:
- "topk": the B draws nearest `target` (smallest (draw - target)^2);
- "threshold": if >= B draws lie in `band`, B of them uniformly at random, else the B nearest the band.
`predicted_success` is the posterior mean alpha / (alpha + beta).

`sampler="fast"` (default) draws Beta by the vectorised hash-seeded Gamma sampler of `_random` (exact
Marsaglia-Tsang, cheap at 1M prompts); `sampler="numpyro"` uses `numpyro.distributions.Beta(...).sample`
(threefry-based, several seconds per million draws on CPU).
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from flax import struct
from jax import lax

from lpo_jax.selection import _random
from lpo_jax.selection.base import Selector
from lpo_jax.selection.validation import (check_common_hparams, check_decay, validate_candidates,
                                          validate_update)


@struct.dataclass
class MoPPSState:
    alpha_N: jnp.ndarray  # f32[N] Beta posterior alpha per prompt
    beta_N: jnp.ndarray  # f32[N]


def mopps_posterior(state: MoPPSState, ids) -> dist.Beta:
    """The Beta posterior over the success rate of prompts `ids` (a numpyro distribution, batch [len(ids)])."""
    return dist.Beta(state.alpha_N[ids], state.beta_N[ids])


def mopps_predictive(state: MoPPSState, ids, n: int) -> dist.BetaBinomial:
    """Posterior predictive of the next group's success count c (numpyro BetaBinomial)."""
    return dist.BetaBinomial(state.alpha_N[ids], state.beta_N[ids], total_count=n)


def mopps_prob_mixed(state: MoPPSState, ids, n: int):
    """P(0 < c < n) for the next group of n rollouts under the posterior predictive."""
    pred = mopps_predictive(state, ids, n)
    return 1.0 - jnp.exp(pred.log_prob(0)) - jnp.exp(pred.log_prob(n))


def thompson_draws(state: MoPPSState, candidates, key, sampler: str = "fast"):
    """One posterior draw per candidate, f32[M] (what `select` ranks; key = the first half of its split)."""
    a, b = state.alpha_N[candidates], state.beta_N[candidates]
    if sampler == "numpyro":
        return dist.Beta(a, b).sample(key)
    return _random.beta_sample(key, a, b)


def make_mopps(num_prompts: int, batch_size: int, *, decay: float = 1.0, alpha0: float = 1.0, beta0: float = 1.0,
               acquisition: str = "topk", target: float = 0.5, band=(0.3, 0.7), sampler: str = "fast",
               warm_start_successes: Optional[np.ndarray] = None, warm_start_failures: Optional[np.ndarray] = None,
               warm_start_weight: float = 3.0) -> Selector:
    """MoPPS selector. Warm start (optional, off in the paper's main runs): alpha = w*successes + alpha0 etc."""
    check_common_hparams(num_prompts, batch_size)
    check_decay(decay)
    if alpha0 <= 0 or beta0 <= 0:
        raise ValueError(f"alpha0 and beta0 must be > 0, got {alpha0}, {beta0}.")
    if acquisition not in ("topk", "threshold"):
        raise ValueError(f"acquisition must be 'topk' or 'threshold', got {acquisition!r}.")
    if sampler not in ("fast", "numpyro"):
        raise ValueError(f"sampler must be 'fast' or 'numpyro', got {sampler!r}.")
    lo, hi = float(band[0]), float(band[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {band}.")
    B = int(batch_size)
    a0 = np.full((num_prompts,), alpha0, np.float32)
    b0 = np.full((num_prompts,), beta0, np.float32)
    if (warm_start_successes is None) != (warm_start_failures is None):
        raise ValueError("pass both warm_start_successes and warm_start_failures, or neither.")
    if warm_start_successes is not None:
        s, f = np.asarray(warm_start_successes, np.float32), np.asarray(warm_start_failures, np.float32)
        if s.shape != (num_prompts,) or f.shape != (num_prompts,) or (s < 0).any() or (f < 0).any():
            raise ValueError(f"warm-start counts must be non-negative arrays of shape ({num_prompts},).")
        a0, b0 = a0 + warm_start_weight * s, b0 + warm_start_weight * f

    def init(key):
        del key
        return MoPPSState(alpha_N=jnp.asarray(a0), beta_N=jnp.asarray(b0))

    def select(state, candidates, key):
        validate_candidates(candidates, num_prompts, B)
        a, b = state.alpha_N[candidates], state.beta_N[candidates]
        k_draw, k_tie = jax.random.split(key)
        g = thompson_draws(state, candidates, k_draw, sampler)
        if acquisition == "topk":
            pos = lax.top_k(-(g - target) ** 2, B)[1]
        else:
            in_band = (g >= lo) & (g <= hi)
            dist_to_band = jnp.maximum(jnp.maximum(lo - g, g - hi), 0.0)
            shuffle = _random.hash_uniform(_random.key_to_seed(k_tie), _random.counters(g.shape[0]))
            enough = jnp.sum(in_band) >= B
            priority = jnp.where(enough, jnp.where(in_band, shuffle, -1.0), -dist_to_band)
            pos = lax.top_k(priority, B)[1]
        return state, candidates[pos], dist.Beta(a, b).mean

    def update(state, selected, successes, n):
        validate_update(selected, successes, n, num_prompts)
        c = successes.astype(jnp.float32)
        a = decay * state.alpha_N[selected] + (1.0 - decay) * alpha0 + c
        b = decay * state.beta_N[selected] + (1.0 - decay) * beta0 + (n - c)
        return MoPPSState(alpha_N=state.alpha_N.at[selected].set(a), beta_N=state.beta_N.at[selected].set(b))

    return Selector(init=init, select=select, update=update)
