"""GPS acquisition (spec §6, Eq. 12-14): greedy max-sum with intra-batch dispersion and inter-step distance.

    U(S) = sum_{tau in S} u(g_tau) + lambda_div * (D_intra(S) + D_inter(S)),   u(g) = -(g - target)^2
    D_intra(S) = 2 / (B (B - 1)) * sum_{i < j in S} ||e_i - e_j||_2
    D_inter(S) = (1 / B) * sum_{i in S} mean_{h in last W batches} ||e_i - e_h||_2
                 (or, cheaper, the mean over batches of the RMS distance to each batch: history_rms_distance)

Greedy adds the candidate with the largest marginal gain
    u(g_c) + lambda_div * [2 / (B (B - 1)) * sum_{j in S} d(c, j) + d_hist(c) / B]
keeping sum_{j in S} d(c, j) as a running f32[M] sum (one [M, d] mat-vec per pick: O(B * M * d) in total);
already chosen candidates are masked to -inf, so there are no duplicates.
"""
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


def success_utility(pred_M, target=0.5):
    """u(g) = -(g - target)^2: largest for prompts predicted to succeed about half the time."""
    return -((pred_M - target) ** 2)


def pairwise_distances(a_MD, b_ND):
    """Euclidean distances f32[M, N] via the Gram expansion (clamped at 0 before the square root)."""
    sq_M = jnp.sum(a_MD * a_MD, axis=-1)
    sq_N = jnp.sum(b_ND * b_ND, axis=-1)
    return jnp.sqrt(jnp.maximum(sq_M[:, None] + sq_N[None, :] - 2.0 * a_MD @ b_ND.T, 0.0))


def history_distance(e_MD, e_hist_HD, valid_H):
    """Mean distance f32[M] from each candidate to the valid history prompts (0 when none is valid)."""
    chex.assert_rank([e_MD, e_hist_HD, valid_H], [2, 2, 1])
    w_H = valid_H.astype(e_MD.dtype)
    total_M = pairwise_distances(e_MD, e_hist_HD) @ w_H
    return total_M / jnp.maximum(w_H.sum(), 1.0)


def history_rms_distance(e_MD, e_hist_WBD, valid_W):
    """Mean over valid history batches of the RMS distance sqrt(mean_h ||e - e_h||^2): f32[M].

    Exact in O(M * W * d) through each batch's centroid and spread (||e - mu_b||^2 + mean_h ||e_h - mu_b||^2),
    against O(M * W * B * d) for the mean distance; 0 when no batch is valid.
    """
    chex.assert_rank([e_MD, e_hist_WBD, valid_W], [2, 3, 1])
    mu_WD = e_hist_WBD.mean(axis=1)
    spread_W = jnp.mean(jnp.sum((e_hist_WBD - mu_WD[:, None]) ** 2, axis=-1), axis=1)
    sq_MW = jnp.maximum(jnp.sum(e_MD * e_MD, -1)[:, None] + jnp.sum(mu_WD * mu_WD, -1)[None]
                        - 2.0 * e_MD @ mu_WD.T, 0.0)
    w_W = valid_W.astype(e_MD.dtype)
    return jnp.sqrt(sq_MW + spread_W[None]) @ w_W / jnp.maximum(w_W.sum(), 1.0)


class GreedyResult(NamedTuple):
    selected_B: jax.Array  # i32[B] positions into the candidate arrays, in pick order
    intra_dist_sum_M: jax.Array  # f32[M] running sum_{j in S} d(c, j) after the last pick


def greedy_max_sum(utility_M, e_MD, hist_dist_M, batch_size: int, lambda_div=1.0) -> GreedyResult:
    """Greedy maximiser of U(S) over |S| = batch_size candidates (module docstring); jittable, static B.

    utility_M: u(g) per candidate; e_MD: embeddings used for distances; hist_dist_M: d_hist per candidate.
    lambda_div = 0 gives exactly the top-B by utility (ties to the lower index).
    """
    chex.assert_rank([utility_M, e_MD, hist_dist_M], [1, 2, 1])
    num_candidates = utility_M.shape[0]
    chex.assert_shape([hist_dist_M, e_MD], [(num_candidates,), (num_candidates, None)])
    if not 1 <= batch_size <= num_candidates:
        raise ValueError(f"batch_size={batch_size} must be in [1, number of candidates={num_candidates}]; "
                         "pass at least batch_size candidates")
    intra_weight = 2.0 / (batch_size * (batch_size - 1)) if batch_size > 1 else 0.0
    base_M = utility_M + lambda_div * hist_dist_M / batch_size
    sq_M = jnp.sum(e_MD * e_MD, axis=-1)

    def pick(i, carry):
        selected_B, chosen_M, dsum_M = carry
        score_M = jnp.where(chosen_M, -jnp.inf, base_M + lambda_div * intra_weight * dsum_M)
        j = jnp.argmax(score_M)
        dist_M = jnp.sqrt(jnp.maximum(sq_M + sq_M[j] - 2.0 * (e_MD @ e_MD[j]), 0.0))
        return selected_B.at[i].set(j), chosen_M.at[j].set(True), dsum_M + dist_M

    init = (jnp.zeros((batch_size,), jnp.int32), jnp.zeros((num_candidates,), bool),
            jnp.zeros((num_candidates,), utility_M.dtype))
    selected_B, _, dsum_M = jax.lax.fori_loop(0, batch_size, pick, init)
    return GreedyResult(selected_B, dsum_M)


def max_sum_objective(utility_M, e_MD, hist_dist_M, subset_S, batch_size: int, lambda_div=1.0):
    """U(S) for an explicit subset (positions into the candidates); reference for tests and diagnostics."""
    intra_weight = 2.0 / (batch_size * (batch_size - 1)) if batch_size > 1 else 0.0
    d_intra = 0.5 * intra_weight * _within_set_distances(e_MD[subset_S]).sum()
    d_inter = hist_dist_M[subset_S].sum() / batch_size
    return utility_M[subset_S].sum() + lambda_div * (d_intra + d_inter)


def mean_pairwise_distance(e_SD):
    """Mean distance over distinct pairs of a set (the dispersion diagnostic)."""
    size = e_SD.shape[0]
    return _within_set_distances(e_SD).sum() / (size * (size - 1))


def _within_set_distances(e_SD):
    """Distances between members of one set with an exact zero diagonal."""
    return jnp.where(jnp.eye(e_SD.shape[0], dtype=bool), 0.0, pairwise_distances(e_SD, e_SD))


def distance_space(E_ND, distance_dim, normalize):
    """Embeddings used for D_intra / D_inter (host numpy, once): optionally projected on the top
    `distance_dim` principal components, and rescaled so the pool's mean pairwise distance is 1."""
    E_ND = np.asarray(E_ND, np.float64)
    if distance_dim is not None and distance_dim < E_ND.shape[1]:
        centered = E_ND - E_ND.mean(0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        E_ND = centered @ vt[:distance_dim].T
    return (E_ND / distance_unit(E_ND) if normalize else E_ND).astype(np.float32)


def distance_unit(E_ND, max_points=1024):
    """Mean pairwise distance over an evenly strided subsample of the pool (deterministic; 1 if degenerate)."""
    stride = max(1, E_ND.shape[0] // max_points)
    sample = E_ND[::stride][:max_points]
    if sample.shape[0] < 2:
        return 1.0
    sq = np.sum(sample ** 2, 1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * sample @ sample.T, 0.0))
    unit = dist.sum() / (sample.shape[0] * (sample.shape[0] - 1))
    return unit if unit > 0 else 1.0
