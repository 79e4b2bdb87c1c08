"""Spec §8 properties of LPO on the response simplex (float64, tol ~1e-6): target, coefficients, theorems."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpo_jax import objectives
from lpo_jax.objectives import make_config, prepare
from objectives_testlib import kl_np, softmax_np, x64

# jitted once per (kind, shape): far cheaper on this CPU than eager op-by-op compilation
lpo_coefficients = jax.jit(objectives.lpo_coefficients, static_argnums=2)
lpo_divergence = jax.jit(objectives.lpo_divergence, static_argnums=2)
lpo_log_target = jax.jit(objectives.lpo_log_target)

B, K = 5, 6
TOL = 1e-6
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _float64():
    with x64():
        yield


def _case(seed, tau_scale=1.0):
    rng = np.random.default_rng(seed)
    R = rng.normal(size=(B, K))
    tau = tau_scale * rng.uniform(0.2, 2.0, B)
    s = rng.normal(size=(B, K))
    return rng, R, tau, s


def _objective_J(v, R, tau, log_pt):
    """v.R - tau KL(v||P_t), per group (numpy)."""
    return (v * R).sum(-1) - tau * kl_np(v, np.exp(log_pt))


# 1. Target ----------------------------------------------------------------------------------------------
@SETTINGS
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50))
def test_target_normalised_and_shift_invariant(seed, shift):
    _, R, tau, s_t = _case(seed)
    log_w = np.asarray(lpo_log_target(jnp.asarray(R), jnp.asarray(tau), jnp.asarray(s_t)))
    np.testing.assert_allclose(np.exp(log_w).sum(-1), 1.0, atol=TOL)
    per_group = np.asarray(lpo_log_target(jnp.asarray(R + shift + np.arange(B)[:, None]), jnp.asarray(tau),
                                          jnp.asarray(s_t)))
    np.testing.assert_allclose(per_group, log_w, atol=TOL)
    np.testing.assert_allclose(np.exp(log_w), softmax_np(R / tau[:, None] + s_t), atol=TOL)


def test_target_limits_argmax_with_ties_and_uniform():
    R = jnp.asarray([[1.0, 3.0, 3.0, 0.0], [2.0, -1.0, 0.5, 0.4]])
    w_cold = np.exp(np.asarray(lpo_log_target(R, jnp.full(2, 1e-6))))
    np.testing.assert_allclose(w_cold, [[0, 0.5, 0.5, 0], [1, 0, 0, 0]], atol=TOL)
    w_hot = np.exp(np.asarray(lpo_log_target(R, jnp.full(2, 1e8))))
    np.testing.assert_allclose(w_hot, 0.25, atol=TOL)
    s_t = jnp.asarray([[0.3, -1.0, 0.2, 0.9], [0.0, 0.5, -0.5, 1.0]])
    w_hot_anchor = np.exp(np.asarray(lpo_log_target(R, jnp.full(2, 1e8), s_t)))
    np.testing.assert_allclose(w_hot_anchor, softmax_np(np.asarray(s_t)), atol=TOL)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_target_maximises_regularised_reward(seed):
    rng, R, tau, s_t = _case(seed)
    log_pt = np.asarray(jax.nn.log_softmax(s_t, -1))
    w = np.exp(np.asarray(lpo_log_target(jnp.asarray(R), jnp.asarray(tau), jnp.asarray(s_t))))
    best = _objective_J(w, R, tau, log_pt)
    for _ in range(20):
        v = rng.dirichlet(np.full(K, 0.5), size=B)
        assert np.all(_objective_J(v, R, tau, log_pt) <= best + 1e-9)
    # stationary: gradient of J(softmax(z)) vanishes at z = log w
    np.testing.assert_allclose(_grad_regularised_reward(jnp.log(jnp.asarray(w)), R, tau, log_pt), 0.0, atol=TOL)


@jax.jit
def _grad_regularised_reward(z, R, tau, log_pt):
    """d/dz of sum_b [softmax(z).R - tau KL(softmax(z)||P_t)]."""
    def J(z_):
        p, log_p = jax.nn.softmax(z_), jax.nn.log_softmax(z_)
        return ((p * R).sum(-1) - tau * (p * (log_p - log_pt)).sum(-1)).sum()
    return jax.grad(J)(z)


# 3-4. Forward and reverse coefficients ------------------------------------------------------------------
@jax.jit
def _grad_fwd_kl(w, log_w, s):
    return jax.grad(lambda s_: jnp.sum(jnp.where(w > 0, w * (log_w - jax.nn.log_softmax(s_)), 0.0)))(s)


@jax.jit
def _grad_rev_kl(log_w, s):
    return jax.grad(lambda s_: jnp.sum(jax.nn.softmax(s_) * (jax.nn.log_softmax(s_) - log_w)))(s)


@SETTINGS
@given(seed=st.integers(0, 10_000), log_tau=st.floats(-6, 1))
def test_fwd_coefficients_are_grad_of_kl_and_bounded(seed, log_tau):
    _, R, _, s = _case(seed)
    s = 3.0 * s
    phi = R / 10.0 ** log_tau
    c = np.asarray(lpo_coefficients(jnp.asarray(s), jnp.asarray(phi), "fwd"))
    w = softmax_np(phi)
    log_w = np.log(np.where(w > 0, w, 1.0))
    grad = _grad_fwd_kl(jnp.asarray(w), jnp.asarray(log_w), jnp.asarray(s))
    np.testing.assert_allclose(c, grad, atol=TOL)
    np.testing.assert_allclose(c, softmax_np(s) - w, atol=TOL)
    np.testing.assert_allclose(c.sum(-1), 0.0, atol=TOL)
    assert np.all(np.abs(c) <= 1.0 + 1e-12) and np.all(np.abs(c).sum(-1) <= 2.0 + 1e-12)


def test_fwd_coefficients_vanish_at_target():
    _, R, tau, _ = _case(1)
    log_w = np.asarray(lpo_log_target(jnp.asarray(R), jnp.asarray(tau)))
    s = log_w + 7.0 + np.arange(B)[:, None]
    np.testing.assert_allclose(lpo_coefficients(jnp.asarray(s), jnp.asarray(log_w), "fwd"), 0.0, atol=TOL)


@SETTINGS
@given(seed=st.integers(0, 10_000), const=st.floats(-30, 30))
def test_rev_coefficients_are_grad_of_reverse_kl(seed, const):
    _, R, tau, s = _case(seed)
    phi = R / tau[:, None]
    c = np.asarray(lpo_coefficients(jnp.asarray(s), jnp.asarray(phi), "rev"))
    log_w = np.log(softmax_np(phi))
    grad = _grad_rev_kl(jnp.asarray(log_w), jnp.asarray(s))
    np.testing.assert_allclose(c, grad, atol=TOL)
    p, d = softmax_np(s), s - phi
    np.testing.assert_allclose(c, p * (d - (p * d).sum(-1, keepdims=True)), atol=TOL)
    np.testing.assert_allclose(c.sum(-1), 0.0, atol=TOL)
    np.testing.assert_allclose(lpo_coefficients(jnp.asarray(s), jnp.asarray(phi + const), "rev"), c, atol=TOL)
    np.testing.assert_allclose(lpo_coefficients(jnp.asarray(phi - 2.0), jnp.asarray(phi), "rev"), 0.0, atol=TOL)


def test_rev_coefficients_unbounded_fwd_not():
    s = jnp.asarray([[0.0, 0.0, 0.0, 0.0]])
    phi = jnp.asarray([[1e6, 0.0, 0.0, 0.0]])  # tau -> 0 target on a uniform policy
    c_rev = np.asarray(lpo_coefficients(s, phi, "rev"))
    c_fwd = np.asarray(lpo_coefficients(s, phi, "fwd"))
    assert np.isfinite(c_rev).all() and np.abs(c_rev).sum() > 1e4
    assert np.abs(c_fwd).sum() <= 2.0


# 7. Forward KL = PG to first order ----------------------------------------------------------------------
def test_fwd_first_order_equals_pg():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(B, K))
    A -= A.mean(-1, keepdims=True)
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        c = np.asarray(lpo_coefficients(jnp.zeros((B, K)), jnp.asarray(eps * A), "fwd"))
        errors.append(np.abs(c / eps + A / K).max())
    assert errors[2] < 1e-3 and errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8


# 8 & 10. Theorem 2 identity, Prop. 3 --------------------------------------------------------------------
@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_theorem2_identity_and_prop3(seed):
    rng, R, tau, s_t = _case(seed)
    P_t = softmax_np(s_t)
    w = np.exp(np.asarray(lpo_log_target(jnp.asarray(R), jnp.asarray(tau), jnp.asarray(s_t))))
    jeffreys = kl_np(w, P_t) + kl_np(P_t, w)
    np.testing.assert_allclose((w * R).sum(-1) - (P_t * R).sum(-1), tau * jeffreys, atol=TOL)
    assert np.all(jeffreys >= 0)
    P = softmax_np(rng.normal(size=(B, K)))
    J = (P * R).sum(-1) - tau * kl_np(P, P_t)
    log_norm = tau * np.log((P_t * np.exp(R / tau[:, None])).sum(-1))
    np.testing.assert_allclose(J, -tau * kl_np(P, w) + log_norm, atol=TOL)


# 11. Corollary 2 (mode coverage) ------------------------------------------------------------------------
@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_corollary2_mode_coverage(seed):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(K, 0.3), size=B)
    P = rng.dirichlet(np.full(K, 0.3), size=B)
    kl = kl_np(w, P)[:, None]
    bound = w * np.exp(-kl / np.where(w > 0, w, 1.0) - 1.0)
    assert np.all(P >= np.where(w > 0, bound, 0.0))


# 12-13. Other divergences and the pointwise ablation ----------------------------------------------------
def _reference_divergence(kind, w, s):
    p = jax.nn.softmax(s)
    if kind == "js":
        m = 0.5 * (w + p)
        return 0.5 * jnp.sum(w * jnp.log(w / m)) + 0.5 * jnp.sum(p * jnp.log(p / m))
    if kind == "hellinger":
        return 0.5 * jnp.sum((jnp.sqrt(w) - jnp.sqrt(p)) ** 2)
    return jnp.sum((w - p) ** 2 / p)  # chi2 (Pearson, w relative to P)


@pytest.mark.parametrize("kind", ["js", "hellinger", "chi2"])
def test_other_divergences_autodiff_zero_sum_and_bounds(kind):
    _, R, tau, s = _case(11)
    rng = np.random.default_rng(5)  # rows B: ordinary; rows B..: tau = 1e-6 targets, far-off policies
    s = np.concatenate([s, 8.0 * rng.normal(size=(50, K))])
    phi = np.concatenate([R / tau[:, None], rng.normal(size=(50, K)) / 1e-6])
    w = softmax_np(phi)
    c = np.asarray(lpo_coefficients(jnp.asarray(s), jnp.asarray(phi), kind))
    ref_value, ref_grad = _reference_value_and_grad(jnp.asarray(w[:B]), jnp.asarray(s[:B]), kind)
    np.testing.assert_allclose(c[:B], ref_grad, atol=TOL)
    np.testing.assert_allclose(lpo_divergence(jnp.asarray(s[:B]), jnp.asarray(phi[:B]), kind), ref_value, atol=TOL)
    assert np.isfinite(c).all()
    np.testing.assert_allclose(c.sum(-1), 0.0, atol=1e-6 * max(1.0, np.abs(c).max()))
    if kind == "chi2":  # unbounded: sum |c| explodes when P_k -> 0 under a target mode
        assert np.abs(c).sum(-1).max() > 100.0
    else:  # bounded: JS |c_k| <= (log 2 + 1/e)/2 < 1, Hellinger |c_k| <= 1/2
        assert np.abs(c).sum(-1).max() <= 2.0


@functools.partial(jax.jit, static_argnums=2)
def _reference_value_and_grad(w, s, kind):
    return jax.vmap(jax.value_and_grad(lambda s_, w_: _reference_divergence(kind, w_, s_)))(s, w)


def test_pointwise_coefficients_constant():
    _, R, tau, s = _case(2)
    phi = R / tau[:, None]
    c1 = np.asarray(lpo_coefficients(jnp.asarray(s), jnp.asarray(phi), "point"))
    c2 = np.asarray(lpo_coefficients(jnp.asarray(s + np.random.default_rng(0).normal(size=s.shape)),
                                     jnp.asarray(phi), "point"))
    np.testing.assert_allclose(c1, -softmax_np(phi), atol=TOL)
    np.testing.assert_allclose(c1.sum(-1), -1.0, atol=TOL)
    np.testing.assert_allclose(c1, c2, atol=0)


# 14. K = 2 reduces to a soft-label DPO-style BCE --------------------------------------------------------
@SETTINGS
@given(s_w=st.floats(-5, 5), s_l=st.floats(-5, 5), tau=st.floats(0.05, 5.0))
def test_k2_soft_bce(s_w, s_l, tau):
    log_w = lpo_log_target(jnp.asarray([[1.0, 0.0]]), jnp.asarray([tau]))
    kl = float(lpo_divergence(jnp.asarray([[s_w, s_l]]), log_w, "fwd")[0])
    p = 1.0 / (1.0 + np.exp(-1.0 / tau))
    log_sig = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731
    bce = -p * log_sig(s_w - s_l) - (1 - p) * log_sig(s_l - s_w)
    entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    np.testing.assert_allclose(kl, bce - entropy, atol=TOL)


# 15. Entropy bonus = temperature shift ------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.1, 1.0, 3.0])
def test_entropy_bonus_shifts_temperature(gamma):
    rng, R, tau, _ = _case(4)
    log_u = np.full((B, K), -np.log(K))
    v_star = np.asarray(jnp.exp(lpo_log_target(jnp.asarray(R), jnp.asarray(tau + gamma))))

    def F(v):
        return (v * R).sum(-1) - tau * kl_np(v, np.exp(log_u)) - gamma * (v * np.log(v)).sum(-1)
    for _ in range(20):
        assert np.all(F(rng.dirichlet(np.ones(K), size=B)) <= F(v_star) + 1e-9)
    # same objective on softmax(z): KL(v||U) = sum v log v + log K, so F = v.R + (tau + gamma) H(v) + const
    log_u = np.full((B, K), -np.log(K))
    np.testing.assert_allclose(_grad_regularised_reward(jnp.log(jnp.asarray(v_star)), R, tau + gamma, log_u),
                               0.0, atol=TOL)


# 16. Zero-variance groups -------------------------------------------------------------------------------
@pytest.mark.parametrize("baseline", ["grpo", "maxrl", "drgrpo", "rloo", "rpp_baseline", "constant"])
def test_zero_variance_group_uniform_target_zero_coefficients(baseline):
    rewards = jnp.asarray([[1.0] * K, [0.0] * K, [0.3, 0.9, 0.1, 0.3, 0.5, 0.2]])
    cfg = make_config("lpo_fwd", baseline=baseline)
    targets = jax.jit(prepare, static_argnums=2)(rewards, jnp.ones((3, K, 4)), cfg)
    assert np.isfinite(np.asarray(targets.target_logits_BK)).all()
    np.testing.assert_array_equal(targets.zero_var_B, [True, True, False])
    np.testing.assert_allclose(np.exp(targets.log_w_BK[:2]), 1.0 / K, atol=TOL)
    np.testing.assert_allclose(targets.advantages_BK[:2], 0.0, atol=TOL)
    for kind in ("fwd", "rev"):
        np.testing.assert_allclose(lpo_coefficients(jnp.zeros((3, K)), targets.target_logits_BK, kind)[:2],
                                   0.0, atol=TOL)
    s = np.random.default_rng(0).normal(size=(3, K))
    np.testing.assert_allclose(lpo_coefficients(jnp.asarray(s), targets.target_logits_BK, "fwd")[:2],
                               softmax_np(s[:2]) - 1.0 / K, atol=TOL)


# 19. Single sample: virtual simplex {R, b} --------------------------------------------------------------
@SETTINGS
@given(R=st.floats(-3, 3), b=st.floats(-3, 3), tau=st.floats(1e-6, 5.0))
def test_single_sample_coefficient(R, b, tau):
    cfg = make_config("lpo_fwd", baseline="constant", tau0=tau, k1_baseline=b)
    targets = prepare(jnp.asarray([[R]]), jnp.ones((1, 1, 3)), cfg)
    c = float(lpo_coefficients(jnp.zeros((1, 1)), targets.target_logits_BK, "fwd")[0, 0])
    np.testing.assert_allclose(c, 0.5 - 1.0 / (1.0 + np.exp(-(R - b) / tau)), atol=TOL)
    assert abs(c) <= 0.5
