"""Exact Bayesian reference for the DPS model by enumeration (numpy; for tests, short histories only).

Model (decay = 1, the only case with a generative meaning):
    T[:, j] ~ Dirichlet(A0[:, j]),   z_0 ~ Categorical(pi0) (never observed),
    z_t ~ Categorical(T[:, z_{t-1}]) for t = 1..T,   observation at t (or none):
        deterministic: the state z_t itself;  binomial: c_t ~ Binomial(n, rates[z_t]).
Enumerates every path z_0..z_T (3^(T+1) of them), integrates T analytically (the Dirichlet-categorical
Pólya urn: each transition j -> i has probability (A0 + counts)[i, j] / column total, counts updated as the
path goes), weights each path by its emission likelihood, and returns p(z_{T+1} | observations) together with
the posterior-mean transition matrix E[T | observations].
"""
import itertools
from math import comb

import numpy as np


def exact_posterior(observations, a0, pi0, *, emission="deterministic", n=8, rates=(0.05, 0.5, 0.95)):
    """(predictive f64[3] for z_{T+1}, posterior mean transition matrix f64[3,3]).

    observations: sequence of length T; entries None (unobserved), a state index (deterministic) or a
    success count in [0, n] (binomial).
    """
    a0 = np.asarray(a0, np.float64)
    pi0 = np.asarray(pi0, np.float64)
    rates = np.asarray(rates, np.float64)
    steps = len(observations)
    if steps > 8:
        raise ValueError(f"enumeration is 3^(T+1) paths; T={steps} is too long for this reference (T <= 8).")
    total_w = 0.0
    predictive = np.zeros(3)
    mean_t = np.zeros((3, 3))
    for path in itertools.product(range(3), repeat=steps + 1):
        w = pi0[path[0]]
        counts = np.zeros((3, 3))
        for t in range(1, steps + 1):
            i, j = path[t], path[t - 1]
            col = a0[:, j] + counts[:, j]
            w *= col[i] / col.sum()
            counts[i, j] += 1
            obs = observations[t - 1]
            if obs is not None:
                w *= _emission(obs, i, emission, n, rates)
            if w == 0.0:
                break
        if w == 0.0:
            continue
        post = a0 + counts
        post_mean = post / post.sum(0, keepdims=True)
        total_w += w
        predictive += w * post_mean[:, path[-1]]
        mean_t += w * post_mean
    if total_w <= 0:
        raise ValueError("the observations have zero probability under this prior.")
    return predictive / total_w, mean_t / total_w


def _emission(obs, state, emission, n, rates):
    if emission == "deterministic":
        return 1.0 if int(obs) == state else 0.0
    r = rates[state]
    return comb(n, int(obs)) * r ** int(obs) * (1.0 - r) ** (n - int(obs))
