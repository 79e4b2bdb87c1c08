"""PG losses (PPO-clip, clip-higher, dual-clip, GSPO, CISPO), aggregation modes, reference KL and entropy
bonus against explicit formulas written in the tests (float64)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.objectives import (aggregate_loss, kl_to_reference, lpo_coefficients, make_config,
                                ppo_clip_token_loss)
from objectives_testlib import loss_suite, random_groups, x64

B, K, T = 3, 4, 6


@pytest.fixture(autouse=True)
def _float64():
    with x64():
        yield


def _clip_ppo(r, A, lo, hi):
    return np.minimum(r * A, np.clip(r, 1 - lo, 1 + hi) * A)


class TokenLossVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_ppo_clip_asymmetric_and_dual_clip(self):
        with x64():
            log_r = jnp.log(jnp.asarray([[0.5, 0.79, 0.9, 1.0, 1.1, 1.25, 1.3, 4.0]] * 2))
            A = jnp.asarray([[1.0], [-1.0]])
            fn = self.variant(lambda x: ppo_clip_token_loss(x, A, 0.2, 0.28))
            value, zeroed = fn(log_r)
            r = np.exp(np.asarray(log_r))
            np.testing.assert_allclose(value, -_clip_ppo(r, np.asarray(A), 0.2, 0.28), atol=1e-12)
            # A > 0: cut above 1.28 only (clip-higher); A < 0: cut below 0.8 only
            np.testing.assert_array_equal(zeroed, [[0, 0, 0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0, 0, 0]])
            grad = jax.grad(lambda x: fn(x)[0].sum())(log_r)
            np.testing.assert_array_equal(np.asarray(grad) == 0.0, np.asarray(zeroed))
            dual_value, dual_zeroed = self.variant(lambda x: ppo_clip_token_loss(x, A, 0.2, 0.2, 3.0))(log_r)
            np.testing.assert_allclose(dual_value[1, -1], 3.0)  # -A * c caps the A < 0 loss at r = 4 > c
            assert bool(dual_zeroed[1, -1]) and not bool(dual_zeroed[1, -2])

    @chex.variants(with_jit=True, without_jit=True)
    def test_aggregation_modes(self):
        with x64():
            rng = np.random.default_rng(0)
            x = rng.normal(size=(B, K, T))
            _, mask, _, _ = random_groups(rng, B, K, T, min_len=0)
            mask[-1] = 0.0  # padding group
            n = mask.sum(-1)
            G = 2  # valid groups
            expected = {"token-mean": (x * mask).sum() / mask.sum(),
                        "seq-mean-token-mean": ((x * mask).sum(-1) / np.maximum(n, 1)).sum() / (K * G),
                        "seq-mean-token-sum": (x * mask).sum() / (K * G),
                        "seq-mean-token-sum-norm": (x * mask).sum() / (K * G * 10)}
            for mode, value in expected.items():
                got = self.variant(lambda a, m, mode=mode: aggregate_loss(a, m, mode, max_response_len=10))(
                    jnp.asarray(x), jnp.asarray(mask))
                np.testing.assert_allclose(got, value, atol=1e-12, err_msg=mode)

    @chex.variants(with_jit=True, without_jit=True)
    def test_lpo_coefficients_every_divergence(self):
        with x64():
            rng = np.random.default_rng(1)
            s, phi = jnp.asarray(rng.normal(size=(B, K))), jnp.asarray(3 * rng.normal(size=(B, K)))
            kinds = ("fwd", "rev", "js", "point")  # closed forms + one autodiff path (all six: simplex tests)
            coefficients = self.variant(lambda a, b: {kind: lpo_coefficients(a, b, kind) for kind in kinds})(s, phi)
            for kind, c in coefficients.items():
                chex.assert_shape(c, (B, K))
                chex.assert_tree_all_finite(c)
                np.testing.assert_allclose(c.sum(-1), -1.0 if kind == "point" else 0.0, atol=1e-9, err_msg=kind)


# One compiled program evaluates every configuration below on the same off-policy batch; the references are
# closed-form numpy gradients (independent of autodiff).
CFGS = (
    make_config("grpo"),
    make_config("dapo"),
    make_config("drgrpo", max_response_len=8),
    make_config("gspo", clip_eps_low=0.05, clip_eps_high=0.1),
    make_config("cispo", clip_eps_low=0.2, clip_eps_high=0.28),
    make_config("grpo", kl_coef=0.1, kl_estimator="k3"),
    make_config("lpo_fwd"),
    make_config("lpo_fwd", entropy_coef=0.05),
)


@pytest.fixture(scope="module")
def suite():
    with x64():
        rng = np.random.default_rng(0)
        rewards, mask, old, logp = random_groups(rng, B, K, T, drift=0.3)
        ref = old + 0.2
        entropy = np.abs(rng.normal(size=(B, K, T)))
        out = loss_suite(*(jnp.asarray(x) for x in (logp, old, mask, rewards, ref, entropy)), cfgs=CFGS)
        out = jax.tree.map(np.asarray, out)
    return dict(logp=logp, old=old, mask=mask, ref=ref, entropy=entropy, out=out)


def _ppo_reference(d, A, lo, hi):
    """Per-token value min(rA, clip(r)A) and d/dlogp of it (0 where the clipped branch is active)."""
    r = np.exp(d)
    value = np.minimum(r * A, np.clip(r, 1 - lo, 1 + hi) * A)
    zeroed = ((A > 0) & (r > 1 + hi)) | ((A < 0) & (r < 1 - lo))
    return value, np.where(zeroed, 0.0, r * A)


@pytest.mark.parametrize("index,normaliser", [(0, "seq-mean"), (1, "tokens"), (2, "L_max")])
def test_ppo_family_matches_closed_form(suite, index, normaliser):
    res, cfg, m = suite["out"][index], CFGS[index], suite["mask"]
    A = res["targets"].advantages_BK[..., None]
    value, dvalue = _ppo_reference(suite["logp"] - suite["old"], A, cfg.clip_eps_low, cfg.clip_eps_high)
    n = m.sum(-1, keepdims=True)
    weight = {"seq-mean": m / n / (B * K), "tokens": m / m.sum(), "L_max": m / (B * K * 8.0)}[normaliser]
    np.testing.assert_allclose(res["value"], -(value * weight).sum(), atol=1e-12)
    np.testing.assert_allclose(res["grad"], -dvalue * weight, atol=1e-12)
    assert 0.0 < res["metrics"]["clip_frac"] < 1.0  # the drift makes clipping active


def test_gspo_matches_sequence_form(suite):
    res, m = suite["out"][3], suite["mask"]
    A = res["targets"].advantages_BK
    n = m.sum(-1)
    rho = np.exp(((suite["logp"] - suite["old"]) * m).sum(-1) / n)
    value = np.minimum(rho * A, np.clip(rho, 0.95, 1.1) * A)
    zeroed = ((A > 0) & (rho > 1.1)) | ((A < 0) & (rho < 0.95))
    assert zeroed.any() and (~zeroed).any()
    np.testing.assert_allclose(res["value"], -value.mean(), atol=1e-12)
    expected = np.where(zeroed, 0.0, -A * rho / (n * B * K))[..., None] * m
    np.testing.assert_allclose(res["grad"], expected, atol=1e-12)


def test_cispo_keeps_every_token_gradient_with_clipped_weight(suite):
    res, m = suite["out"][4], suite["mask"]
    weight = np.clip(np.exp(suite["logp"] - suite["old"]), 0.8, 1.28)
    expected = -weight * res["targets"].advantages_BK[..., None] * m / m.sum()
    np.testing.assert_allclose(res["grad"], expected, atol=1e-12)
    assert res["metrics"]["clip_frac"] > 0 and np.all(res["grad"][m > 0] != 0)


def test_reference_kl_estimators_and_penalty(suite):
    logp, ref, m = suite["logp"], suite["ref"], suite["mask"]
    x = ref - logp  # log(ref / pi)
    expected = {"k1": -x, "k2": 0.5 * x ** 2, "k3": np.exp(x) - x - 1,
                "low_var_kl": np.clip(np.exp(np.clip(x, -20, 20)) - np.clip(x, -20, 20) - 1, -10, 10)}
    got = _all_kl_estimators(jnp.asarray(logp), jnp.asarray(ref))
    for est, value in expected.items():
        np.testing.assert_allclose(got[est], value, atol=1e-12, err_msg=est)
    assert np.all(expected["k3"] >= 0)
    base, with_kl = suite["out"][0], suite["out"][5]
    n = m.sum(-1, keepdims=True)
    kl_agg = ((expected["k3"] * m).sum(-1) / n[..., 0]).mean()
    np.testing.assert_allclose(base["metrics"]["kl_ref"], kl_agg, atol=1e-12)
    np.testing.assert_allclose(with_kl["value"] - base["value"], 0.1 * kl_agg, atol=1e-12)
    np.testing.assert_allclose(with_kl["grad"] - base["grad"], 0.1 * (1 - np.exp(x)) * m / n / (B * K), atol=1e-12)


def _all_kl_estimators_impl(logp, ref):
    return {est: kl_to_reference(logp, ref, est) for est in ("k1", "k2", "k3", "low_var_kl")}


_all_kl_estimators = jax.jit(_all_kl_estimators_impl)


def test_entropy_bonus_and_metric(suite):
    plain, bonus, m, ent = suite["out"][6], suite["out"][7], suite["mask"], suite["entropy"]
    n = m.sum(-1, keepdims=True)
    np.testing.assert_allclose(bonus["metrics"]["entropy"], (ent * m).sum() / m.sum(), atol=1e-12)
    np.testing.assert_allclose(plain["value"] - bonus["value"], 0.05 * ((ent * m).sum(-1) / n[..., 0]).mean(),
                               atol=1e-12)
    np.testing.assert_allclose(bonus["grad_entropy"], -0.05 * m / n / (B * K), atol=1e-12)
    np.testing.assert_allclose(plain["grad_entropy"], 0.0, atol=0)
    np.testing.assert_allclose(bonus["grad"], plain["grad"], atol=1e-12)
