"""Advantages, temperatures and matched targets (spec §2, §8.2), DAPO pipeline helpers (float64)."""
import chex
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.objectives import (ADVANTAGE_FNS, compute_advantages, get_advantage_fn, lpo_log_target,
                                make_config, nonzero_variance_groups, overlong_penalty, prepare)
from objectives_testlib import softmax_np, x64

B, K, T = 4, 5, 6
EPS = 1e-6


def _batch(seed=0, binary=False):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 2, (B, K)).astype(float) if binary else rng.uniform(0.0, 2.0, (B, K))
    lengths = rng.integers(0, T + 1, (B, K))
    mask = (np.arange(T) < lengths[..., None]).astype(float)
    return rewards, mask


def _expected_advantages(baseline, rewards, mask, ddof=1, whiten="token", tau0=0.7):
    """Independent numpy formulas from the papers / verl."""
    mu = rewards.mean(-1, keepdims=True)
    if baseline == "grpo":
        return (rewards - mu) / (rewards.std(-1, ddof=ddof, keepdims=True) + EPS)
    if baseline == "drgrpo":
        return rewards - mu
    if baseline == "rloo":
        loo = (rewards.sum(-1, keepdims=True) - rewards) / (K - 1)
        return rewards - loo
    if baseline == "maxrl":
        return (rewards - mu) / (mu + EPS)
    if baseline == "constant":
        return (rewards - mu) / tau0
    x = rewards - mu  # rpp_baseline: whiten group-centred rewards over the batch
    weight = mask.sum(-1) if whiten == "token" else (mask.sum(-1) > 0).astype(float)
    mean = (weight * x).sum() / weight.sum()
    std = np.sqrt((weight * (x - mean) ** 2).sum() / (weight.sum() - 1))
    return (x - mean) / (std + EPS)


@pytest.mark.parametrize("baseline", ["grpo", "drgrpo", "rloo", "maxrl", "rpp_baseline", "constant"])
def test_advantages_formulas_and_matched_targets(baseline):
    with x64():
        rewards, mask = _batch(1)
        cfg = make_config("lpo_fwd", baseline=baseline, tau0=0.7)
        targets = prepare(jnp.asarray(rewards), jnp.asarray(mask), cfg)
        expected = _expected_advantages(baseline, rewards, mask)
        np.testing.assert_allclose(targets.advantages_BK, expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ADVANTAGE_FNS[baseline](jnp.asarray(rewards), jnp.asarray(mask), cfg), expected,
                                   rtol=1e-9, atol=1e-9)
        # matched target (§8.2): softmax(A) == w*(R, tau_mode) == lpo_log_target
        w = np.exp(np.asarray(targets.log_w_BK))
        np.testing.assert_allclose(w, softmax_np(expected), atol=1e-9)
        np.testing.assert_allclose(w, np.exp(lpo_log_target(jnp.asarray(rewards), targets.tau_B)), atol=1e-9)


@pytest.mark.parametrize("ddof", [0, 1])
def test_grpo_binary_temperature(ddof):
    with x64():
        rewards, mask = _batch(2, binary=True)
        targets = prepare(jnp.asarray(rewards), jnp.asarray(mask), make_config("grpo", grpo_std_ddof=ddof))
        mu = rewards.mean(-1)
        expected = np.sqrt(mu * (1 - mu)) * (np.sqrt(K / (K - 1)) if ddof == 1 else 1.0) + EPS
        np.testing.assert_allclose(targets.tau_B, expected, rtol=1e-12)
        np.testing.assert_allclose(targets.tau_B, rewards.std(-1, ddof=ddof) + EPS, rtol=1e-12)


def test_rpp_sequence_whitening_option_and_batch_level_stats():
    with x64():
        rewards, mask = _batch(3)
        cfg = make_config("rpp", rpp_whiten="sequence")
        got = compute_advantages(jnp.asarray(rewards), jnp.asarray(mask), cfg)
        np.testing.assert_allclose(got, _expected_advantages("rpp_baseline", rewards, mask, whiten="sequence"),
                                   atol=1e-9)
        token = compute_advantages(jnp.asarray(rewards), jnp.asarray(mask), make_config("rpp"))
        assert np.abs(np.asarray(got) - np.asarray(token)).max() > 1e-3  # the two weightings differ


def test_single_response_rpp_is_plain_reinforce_pp_and_constant_uses_batch_mean():
    with x64():
        rng = np.random.default_rng(4)
        rewards = rng.normal(size=(6, 1))
        mask = np.ones((6, 1, 3))
        rpp = prepare(jnp.asarray(rewards), jnp.asarray(mask), make_config("rpp"))
        n_tokens = mask.sum()  # token-weighted (verl masked_whiten): 3 tokens per response, unbiased over tokens
        std = np.sqrt(3 * ((rewards - rewards.mean()) ** 2).sum() / (n_tokens - 1)) + EPS
        np.testing.assert_allclose(rpp.advantages_BK, (rewards - rewards.mean()) / std, atol=1e-9)
        const = prepare(jnp.asarray(rewards), jnp.asarray(mask), make_config("lpo_fwd", baseline="constant"))
        np.testing.assert_allclose(const.target_logits_BK, rewards - rewards.mean(), atol=1e-12)
        np.testing.assert_allclose(np.exp(const.log_w_BK), 1 / (1 + np.exp(-(rewards - rewards.mean()))), atol=1e-12)


def test_advantage_registry_names():
    assert set(ADVANTAGE_FNS) == {"grpo", "drgrpo", "rloo", "maxrl", "rpp_baseline", "constant"}
    assert get_advantage_fn("rloo") is ADVANTAGE_FNS["rloo"]


class PrepareVariantsTest(chex.TestCase):
    """prepare() and the DAPO helpers give identical results with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_prepare_and_dapo_helpers(self):
        rewards = jnp.asarray([[1.0, 0.0, 1.0, 1.0, 0.0], [1.0] * K, [0.0] * K, [0.2, 0.4, 0.0, 1.0, 0.3]])
        mask = jnp.ones((B, K, T))
        cfg = make_config("grpo")
        targets = self.variant(lambda r, m: prepare(r, m, cfg))(rewards, mask)
        chex.assert_shape([targets.advantages_BK, targets.target_logits_BK], (B, K))
        chex.assert_shape([targets.tau_B, targets.zero_var_B], (B,))
        chex.assert_tree_all_finite((targets.advantages_BK, targets.target_logits_BK, targets.tau_B))
        np.testing.assert_array_equal(targets.zero_var_B, [False, True, True, False])
        keep = self.variant(nonzero_variance_groups)(rewards)
        np.testing.assert_array_equal(keep, [True, False, False, True])
        lengths = jnp.asarray([0, 80, 81, 90, 100, 101, 500])
        penalty = self.variant(lambda n: overlong_penalty(n, max_len=100, cache_len=20))(lengths)
        np.testing.assert_allclose(penalty, [0.0, 0.0, -0.05, -0.5, -1.0, -1.0, -1.0], atol=1e-6)
