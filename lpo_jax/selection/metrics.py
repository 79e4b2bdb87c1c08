"""Selection metrics (spec §1): mixed-group masks, Spearman correlation, run summaries.

All functions are pure and jittable; Spearman uses average ranks for ties (realised success rates take
only n + 1 values and DPS predictions tie often) and returns NaN when it is undefined (fewer than two
valid entries, a constant input, or NaN predictions as from Uniform/DS).
"""
import jax.numpy as jnp


def mixed_mask(successes, n, filter_min=None, filter_max=None):
    """bool mask of groups that carry gradient: 0 < c < n, or filter_min <= c/n <= filter_max if given."""
    if filter_min is None and filter_max is None:
        return (successes > 0) & (successes < n)
    rate = successes / n
    lo = -jnp.inf if filter_min is None else filter_min
    hi = jnp.inf if filter_max is None else filter_max
    return (rate >= lo) & (rate <= hi)


def _average_ranks(x_M, valid_M):
    big = jnp.where(valid_M, x_M, jnp.inf)  # invalid entries sort last and do not shift valid ranks
    s = jnp.sort(big)
    left = jnp.searchsorted(s, big, side="left")
    right = jnp.searchsorted(s, big, side="right")
    return (left + right - 1).astype(jnp.float32) / 2.0


def spearman(x_M, y_M, valid_M=None):
    """Spearman rank correlation of x and y over entries where valid (default all); NaN if undefined."""
    x_M = jnp.asarray(x_M, jnp.float32)
    y_M = jnp.asarray(y_M, jnp.float32)
    valid = jnp.ones(x_M.shape, bool) if valid_M is None else valid_M
    has_nan = jnp.any(valid & (jnp.isnan(x_M) | jnp.isnan(y_M)))
    valid = valid & ~jnp.isnan(x_M) & ~jnp.isnan(y_M)
    w = valid.astype(jnp.float32)
    count = w.sum()
    rx, ry = _average_ranks(x_M, valid), _average_ranks(y_M, valid)
    mx, my = (rx * w).sum() / count, (ry * w).sum() / count
    dx, dy = (rx - mx) * w, (ry - my) * w
    vx, vy = (dx * dx).sum(), (dy * dy).sum()
    rho = (dx * dy).sum() / jnp.sqrt(vx * vy)
    undefined = has_nan | (count < 2) | (vx <= 0) | (vy <= 0)
    return jnp.where(undefined, jnp.nan, rho)


def summarize(per_step):
    """Run-level figures from the harness's per-step arrays (each f32[T] or [S, T] over seeds).

    effective_ratio = sum(effective) / sum(trained); rollouts_per_effective = sum(rollouts) / sum(effective);
    spearman / heldout_spearman: mean over the steps where defined (NaN if never defined).
    """
    import numpy as np

    eff = np.asarray(per_step["effective"], np.float64)
    trained = np.asarray(per_step["trained"], np.float64)
    rollouts = np.asarray(per_step["rollouts"], np.float64)
    out = {
        "effective_ratio": float(eff.sum() / max(trained.sum(), 1.0)),
        "rollouts_per_effective": float(rollouts.sum() / eff.sum()) if eff.sum() > 0 else float("nan"),
    }
    for name in ("spearman", "spearman_true", "heldout_spearman", "oracle_heldout_spearman"):
        if name in per_step:
            v = np.asarray(per_step[name], np.float64)
            out[name] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out


def mixed_ratio_ceiling(residual_logit_sd, n=8, num_nodes=200):
    """Highest effective ratio any selector can reach on prompts it has no own outcomes for (numpy, host).

    If what the selector knows about a prompt (its embedding, the shared history) leaves the prompt's success
    logit with a Gaussian residual of sd sigma_r, the probability that its group of n is mixed is
    E_x[1 - g^n - (1 - g)^n], g = sigmoid(x), x ~ N(mu, sigma_r^2), for the best-case centre mu; no acquisition
    can beat max_mu of that. Simulator: sigma_r = difficulty_std * sqrt((1 - embed_corr^2)(1 - nonlinear_share)).
    """
    import numpy as np

    x, w = np.polynomial.hermite_e.hermegauss(num_nodes)
    w = w / w.sum()
    mu = np.linspace(-4.0, 4.0, 161)[:, None]
    g = 1.0 / (1.0 + np.exp(-(mu + residual_logit_sd * x[None])))
    return float(np.max((1.0 - g**n - (1.0 - g) ** n) @ w))
