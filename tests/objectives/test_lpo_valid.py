"""Per-item validity in LPO (padded items of static-shape groups, e.g. TRACE tree leaves).

Properties: with every item valid `prepare_masked` == `prepare`; padded items get phi = -inf, A = 0, c = 0;
on the valid items everything (targets, coefficients, divergence, loss gradient) equals the same group with
the padding removed; coefficients sum to zero over the valid items; groups without valid items are finite
and contribute nothing.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lpo_jax.objectives import loss, make_config, prepare
from lpo_jax.objectives.lpo import (INVALID_LOGIT, item_valid, lpo_coefficients, lpo_divergence,
                                    prepare_masked)

_coef = jax.jit(lpo_coefficients, static_argnums=2)     # compiled once per (shape, kind): fast examples
_div = jax.jit(lpo_divergence, static_argnums=2)
BASELINES = ("grpo", "drgrpo", "rloo", "maxrl", "rpp_baseline", "constant")
ZERO_SUM = ("fwd", "rev", "js", "hellinger", "chi2")


def _case(seed, B=3, K=5, T=4, p_valid=0.6):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 2, (B, K)).astype(np.float32) + 0.1 * rng.random((B, K)).astype(np.float32)
    valid = rng.random((B, K)) < p_valid
    valid[:, :2] = True  # >= 2 valid items per group
    perm = np.argsort(rng.random((B, K)), -1)
    valid = np.take_along_axis(valid, perm, -1)
    mask = (rng.random((B, K, T)) < 0.8).astype(np.float32)
    mask[..., 0] = 1.0
    s = rng.normal(size=(B, K)).astype(np.float32)
    return rewards, valid, mask, s


@pytest.mark.parametrize("baseline", BASELINES)
def test_all_valid_equals_prepare(baseline):
    cfg = make_config("lpo_fwd", baseline=baseline)
    rewards, _, mask, _ = _case(0)
    a, b = prepare(jnp.asarray(rewards), jnp.asarray(mask), cfg), prepare_masked(jnp.asarray(rewards), jnp.asarray(mask), cfg)
    chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", BASELINES)
def test_padded_items_equal_compacted_group(baseline):
    cfg = make_config("lpo_fwd", baseline=baseline)
    rewards, valid, mask, _ = _case(1)
    mask[~valid] = 0.0                              # padded slots: empty loss mask (the implicit rule)
    t = prepare_masked(jnp.asarray(rewards), jnp.asarray(mask), cfg)
    phi, adv = np.asarray(t.target_logits_BK), np.asarray(t.advantages_BK)
    assert np.all(np.isneginf(phi[~valid])) and np.all(adv[~valid] == 0)
    if baseline == "rpp_baseline":   # batch whitening couples groups: compare on the compacted batch below
        return
    for b in range(rewards.shape[0]):
        keep = valid[b]
        ref = prepare(jnp.asarray(rewards[b:b + 1, keep]), jnp.asarray(mask[b:b + 1, keep]), cfg)
        np.testing.assert_allclose(phi[b, keep], np.asarray(ref.target_logits_BK)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(adv[b, keep], np.asarray(ref.advantages_BK)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t.tau_B[b], ref.tau_B[0], rtol=1e-5)
        assert bool(t.zero_var_B[b]) == bool(ref.zero_var_B[0])


def test_explicit_valid_excludes_items_with_tokens():
    cfg = make_config("lpo_fwd")
    rewards, valid, mask, _ = _case(2)
    implicit = mask.copy()
    implicit[~valid] = 0.0
    a = prepare_masked(jnp.asarray(rewards), jnp.asarray(mask), cfg, valid_BK=jnp.asarray(valid))
    b = prepare_masked(jnp.asarray(rewards), jnp.asarray(implicit), cfg)
    chex.assert_trees_all_close(a, b)
    with pytest.raises(ValueError, match="valid_BK"):
        prepare_masked(jnp.asarray(rewards), jnp.asarray(mask), cfg, valid_BK=jnp.ones((1, 5), bool))
    with pytest.raises(ValueError, match="K >= 2"):
        prepare_masked(jnp.ones((2, 1)), jnp.ones((2, 1, 3)), cfg)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(ZERO_SUM + ("point",)))
def test_coefficients_zero_on_padding_and_match_compacted(seed, kind):
    rewards, valid, _, s = _case(seed)
    phi = np.where(valid, rewards / 0.5, INVALID_LOGIT).astype(np.float32)
    c = np.asarray(_coef(jnp.asarray(s), jnp.asarray(phi), kind))
    d = np.asarray(_div(jnp.asarray(s), jnp.asarray(phi), kind))
    assert np.all(np.isfinite(c)) and np.all(np.isfinite(d))
    assert np.all(c[~valid] == 0)
    for b in range(s.shape[0]):
        keep = valid[b]
        ref_c = _coef(jnp.asarray(s[b:b + 1, keep]), jnp.asarray(phi[b:b + 1, keep]), kind)
        ref_d = _div(jnp.asarray(s[b:b + 1, keep]), jnp.asarray(phi[b:b + 1, keep]), kind)
        np.testing.assert_allclose(c[b, keep], np.asarray(ref_c)[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(d[b], np.asarray(ref_d)[0], rtol=1e-4, atol=1e-6)
    if kind in ZERO_SUM:
        np.testing.assert_allclose(c.sum(-1), 0.0, atol=1e-5)


class TestLoss(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_and_gradient_ignore_padding(self):
        cfg = make_config("lpo_fwd")
        rewards, valid, mask, _ = _case(3, B=3, K=6, T=5)
        mask[~valid] = 0.0
        mask[2] = 0.0                                   # a group with no valid item at all
        rng = np.random.default_rng(4)
        logp = jnp.asarray(rng.normal(size=mask.shape).astype(np.float32) * 0.1)
        old = jnp.zeros_like(logp)
        targets = prepare_masked(jnp.asarray(rewards), jnp.asarray(mask), cfg)
        f = self.variant(lambda lp: loss(lp, old, jnp.asarray(mask), targets, cfg)[0])
        value, grad = f(logp), self.variant(jax.grad(lambda lp: loss(lp, old, jnp.asarray(mask), targets, cfg)[0]))(logp)
        grad = np.asarray(grad)
        assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
        assert np.all(grad[~valid] == 0) and np.all(grad[2] == 0)
        assert np.abs(grad[valid]).sum() > 0
        # the same groups with padding removed: the loss averages over the 2 groups with a valid item
        for b in range(2):
            keep = valid[b]
            sub_t = prepare(jnp.asarray(rewards[b:b + 1, keep]), jnp.asarray(mask[b:b + 1, keep]), cfg)
            g = jax.jit(jax.grad(lambda lp: loss(lp, old[b:b + 1, keep], jnp.asarray(mask[b:b + 1, keep]), sub_t,
                                                 cfg)[0]))(logp[b:b + 1, keep])
            np.testing.assert_allclose(grad[b, keep] * 2, np.asarray(g)[0], rtol=1e-4, atol=1e-7)


def test_item_valid_marks_only_neg_inf():
    phi = jnp.array([[0.0, -jnp.inf, 3.0, -1e30]])
    np.testing.assert_array_equal(np.asarray(item_valid(phi)), [[True, False, True, True]])
