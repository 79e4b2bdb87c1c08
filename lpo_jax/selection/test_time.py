"""GPS test-time compute allocation (spec §6, Eq. 22-23): samples per test prompt from predicted difficulty.

Given predicted success probabilities g_P for P test prompts and a fixed sample budget, choose integer
counts n_P (sum n_P = budget exactly) maximising the expected number of solved prompts

    sum_tau 1 - (1 - g_tau)^{n_tau}

greedily: each of the budget's samples goes to the prompt with the largest marginal gain
g_tau (1 - g_tau)^{n_tau} (ties to the lowest index). The gains of one prompt shrink geometrically, so the
objective is separable and concave and greedy allocation is optimal for it. This favours "challenging but
solvable" prompts: a prompt at g = 0.99 gets its first sample and little more, one at g = 0.3 keeps
earning samples, one at g = 0 gets samples only once every other gain has decayed below ~0.

The spec's binned form (bin by g, samples per bin) is the special case of constant g within a bin; this
per-prompt greedy needs no bin edges. Optional min/max samples per prompt.

Uncertain success rates [ours]. pass@n is not linear in g: a prompt whose rate is "0.3 on average" because it
is either unsolvable or easy gains far less from extra samples than one whose rate is 0.3. `pred` may
therefore be a per-prompt predictive distribution: nodes f32[P, S] with weights f32[S] (sum 1). The objective
becomes sum_tau sum_s w_s [1 - (1 - g_{tau s})^{n_tau}], the marginal gains sum_s w_s g_s (1 - g_s)^n still
shrink with n, and greedy stays optimal.

Calibration from realised outcomes [ours]: a point predictor p (e.g. GPS's Eq. 10) knows nothing about the
spread of prompt difficulty around its prediction. `fit_logit_calibration` fits

    logit g_tau ~ N(scale * logit(p_tau) + bias, sd^2),   c_tau ~ Binomial(n, g_tau)

by maximum a posteriori (32-node Gauss-Hermite over the normal, BFGS) on predict-then-observe pairs (p made
before c was seen); `logit_normal_nodes` turns it into the (nodes, weights) predictive the allocator takes.
Priors: bias ~ N(0, 2^2), log sd ~ N(0, 2^2) (weak) and a sceptical scale ~ N(0, 0.5^2) by default: a
selector's history holds outcomes of the prompts it chose, i.e. those predicted near 0.5, so it says little
about how far to trust a confident p = 0.001 (measured on the simulator: GPS's held-out predictions at
p < 0.02 had true mean success 0.33). With scale near 0 every prompt gets the same predictive and the
allocation is the uniform one; the data must earn the departure from it. scale_prior=(1, 1) trusts the
predictor's logits instead. sd = 0 with scale 1, bias 0 is the uncalibrated point prediction.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.optimize import minimize
from jax.scipy.special import gammaln


def expected_solved(pred_P, samples_P, weights_S=None):
    """sum_tau 1 - (1 - g_tau)^{n_tau}: expected prompts with at least one correct sample.

    pred f32[P] (point rates) or f32[P, S] with weights_S (a predictive distribution per prompt)."""
    pred_PS, weights_S = _as_nodes(pred_P, weights_S)
    return jnp.sum((1.0 - (1.0 - pred_PS) ** jnp.asarray(samples_P)[:, None]) @ weights_S)


def _as_nodes(pred, weights_S):
    """(nodes f32[P, S], weights f32[S]) from a point prediction f32[P] or nodes f32[P, S] (+ weights)."""
    pred = jnp.asarray(pred)
    if pred.ndim == 1:
        if weights_S is not None:
            raise ValueError("weights are only meaningful with pred of shape [P, S] (S nodes per prompt)")
        return pred[:, None], jnp.ones((1,), pred.dtype)
    if weights_S is None:
        return pred, jnp.full((pred.shape[1],), 1.0 / pred.shape[1], pred.dtype)
    weights_S = jnp.asarray(weights_S, pred.dtype)
    if weights_S.shape != (pred.shape[1],):
        raise ValueError(f"weights must have shape [S={pred.shape[1]}] (one per node), got {weights_S.shape}")
    return pred, weights_S


def allocate_test_samples(pred_P, budget: int, *, min_per_prompt: int = 0, max_per_prompt=None, weights_S=None):
    """Integer samples per prompt i32[P] with sum == budget (greedy marginal gain; module docstring).

    pred_P: predicted success probabilities in [0, 1] (e.g. GPS's predict on the test prompts' embeddings),
    f32[P], or a predictive distribution per prompt: nodes f32[P, S] with weights_S (default uniform).
    budget: total samples (static int). min_per_prompt: samples every prompt gets first. max_per_prompt:
    optional cap per prompt (None = no cap). Jittable with budget, min and max static.
    """
    pred_P = jnp.asarray(pred_P)
    if pred_P.ndim not in (1, 2) or not jnp.issubdtype(pred_P.dtype, jnp.floating):
        raise ValueError(f"pred must be a 1-D float array of success probabilities (or [P, S] nodes), got "
                         f"{pred_P.dtype}{list(pred_P.shape)}")
    num_prompts = pred_P.shape[0]
    if not isinstance(budget, int) or not isinstance(min_per_prompt, int) or min_per_prompt < 0:
        raise ValueError(f"budget and min_per_prompt must be non-negative ints, got {budget!r}, {min_per_prompt!r}")
    if budget < min_per_prompt * num_prompts:
        raise ValueError(f"budget={budget} is below min_per_prompt={min_per_prompt} x {num_prompts} prompts")
    if max_per_prompt is not None:
        if not isinstance(max_per_prompt, int) or max_per_prompt < max(min_per_prompt, 1):
            raise ValueError(f"max_per_prompt must be an int >= max(min_per_prompt, 1), got {max_per_prompt!r}")
        if budget > max_per_prompt * num_prompts:
            raise ValueError(f"budget={budget} exceeds max_per_prompt={max_per_prompt} x {num_prompts} prompts")
    try:
        finite = bool(jnp.all(jnp.isfinite(pred_P)))
    except jax.errors.TracerBoolConversionError:  # under jit: cannot check values
        finite = True
    if not finite:
        raise ValueError("pred contains NaN or inf; predicted success probabilities must be finite")
    g_PS, w_S = _as_nodes(jnp.clip(pred_P.astype(jnp.float32), 0.0, 1.0), weights_S)
    samples_P = jnp.full((num_prompts,), min_per_prompt, jnp.int32)
    miss_PS = (1.0 - g_PS) ** min_per_prompt  # P(all samples so far fail | node)
    gain_P = (g_PS * miss_PS) @ w_S
    cap = jnp.iinfo(jnp.int32).max if max_per_prompt is None else max_per_prompt

    def give_one(_, carry):
        samples_P, miss_PS, gain_P = carry
        open_P = samples_P < cap
        j = jnp.argmax(jnp.where(open_P, gain_P, -1.0))  # gains are >= 0, so an open prompt always wins
        miss_S = miss_PS[j] * (1.0 - g_PS[j])
        return samples_P.at[j].add(1), miss_PS.at[j].set(miss_S), gain_P.at[j].set((g_PS[j] * miss_S) @ w_S)

    samples_P, _, _ = jax.lax.fori_loop(0, budget - min_per_prompt * num_prompts, give_one,
                                        (samples_P, miss_PS, gain_P))
    return samples_P


class LogitCalibration(NamedTuple):
    """logit g ~ N(scale * logit(p) + bias, sd^2) for a point prediction p (module docstring)."""

    scale: jax.Array  # f32[]
    bias: jax.Array  # f32[]
    sd: jax.Array  # f32[]
    num_observations: jax.Array  # f32[] valid pairs it was fitted on (0: the priors' mode)


def _hermite(num_nodes):
    x, w = np.polynomial.hermite_e.hermegauss(num_nodes)  # weight exp(-x^2 / 2)
    return jnp.asarray(x, jnp.float32), jnp.asarray(w / w.sum(), jnp.float32)


def _logit(p):
    p = jnp.clip(p, 1e-6, 1.0 - 1e-6)
    return jnp.log(p) - jnp.log1p(-p)


def logit_normal_log_marginal(logit_mean, sd, c, n, num_nodes: int = 32):
    """log p(c | n) with c ~ Binomial(n, g), logit g ~ N(logit_mean, sd^2), by Gauss-Hermite quadrature."""
    x_Q, w_Q = _hermite(num_nodes)
    eta = logit_mean[..., None] + sd * x_Q
    log_binom = (gammaln(n + 1.0) - gammaln(c + 1.0) - gammaln(n - c + 1.0))[..., None]
    ll = log_binom + c[..., None] * jax.nn.log_sigmoid(eta) + (n - c)[..., None] * jax.nn.log_sigmoid(-eta)
    return jax.nn.logsumexp(ll + jnp.log(w_Q), axis=-1)


def fit_logit_calibration(pred, c, n, valid=None, *, scale_prior=(0.0, 0.5)) -> LogitCalibration:
    """Fit LogitCalibration on predict-then-observe pairs: point predictions p, counts c out of n (any equal
    shapes; n broadcastable), valid mask; scale_prior = (mean, sd) of the Gaussian prior on the scale.
    Jittable (BFGS inside). Module docstring gives the model and priors."""
    logit_p = _logit(jnp.asarray(pred, jnp.float32))
    c = jnp.asarray(c, jnp.float32)
    n = jnp.broadcast_to(jnp.asarray(n, jnp.float32), c.shape)
    w = jnp.ones(c.shape, jnp.float32) if valid is None else jnp.asarray(valid, jnp.float32)

    def loss(theta):
        scale, bias, log_sd = theta
        ll = logit_normal_log_marginal(scale * logit_p + bias, jnp.exp(log_sd), c, n)
        prior = 0.5 * (((scale - scale_prior[0]) / scale_prior[1]) ** 2 + (bias / 2.0) ** 2 + (log_sd / 2.0) ** 2)
        return -(jnp.sum(w * ll) - prior) / jnp.maximum(w.sum(), 1.0)

    theta = minimize(loss, jnp.asarray([scale_prior[0], 0.0, 0.0], jnp.float32), method="BFGS").x
    return LogitCalibration(theta[0], theta[1], jnp.exp(theta[2]), w.sum())


def logit_normal_nodes(pred_P, calibration: LogitCalibration, num_nodes: int = 16):
    """Calibrated predictive of point predictions pred_P: (nodes f32[P, S], weights f32[S]) for
    allocate_test_samples / expected_solved (Gauss-Hermite nodes of the fitted logit-normal)."""
    x_S, w_S = _hermite(num_nodes)
    mean_P = calibration.scale * _logit(jnp.asarray(pred_P, jnp.float32)) + calibration.bias
    return jax.nn.sigmoid(mean_P[:, None] + calibration.sd * x_S), w_S
