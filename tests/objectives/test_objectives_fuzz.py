"""Hypothesis fuzzing of every registered objective (float32, as trained) and clear errors on bad inputs."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpo_jax.objectives import (OBJECTIVE_NAMES, Targets, get_advantage_fn, get_objective, loss,
                                lpo_coefficients, make_config, overlong_penalty, prepare)
from lpo_jax.objectives.config import BASELINES, BASELINES_NEEDING_GROUPS

B, T = 3, 5
# Every registered objective; the LPO variants are paired with every temperature mode between them (the loss
# reads the baseline only through the targets), and the reference-KL / entropy / dual-clip paths are switched on.
VARIANTS = {
    "grpo": dict(dual_clip_c=3.0, kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01),
    "rpp": dict(kl_coef=0.1, kl_estimator="low_var_kl"),
    "lpo_fwd": dict(baseline="maxrl"),  # tau = eps on unanimous groups
    "lpo_rev": dict(baseline="rloo"),
    "lpo_js": dict(baseline="rpp_baseline"),
    "lpo_hellinger": dict(baseline="drgrpo"),
    "lpo_chi2": dict(baseline="constant", tau0=0.05),
    "lpo_point": dict(baseline="grpo", lpo_clip="sign"),
}


def _configs(K):
    cfgs = {name: make_config(name, **VARIANTS.get(name, {})) for name in OBJECTIVE_NAMES}
    if K == 1:  # group modes need K >= 2; K = 1 runs the same losses on the virtual simplex / plain REINFORCE++
        cfgs = {k: (dataclasses.replace(c, baseline="constant") if c.baseline in BASELINES_NEEDING_GROUPS else c)
                for k, c in cfgs.items()}
    return cfgs


TRACES = {}


@functools.lru_cache(maxsize=None)
def _run_all(K):
    """One jitted program per K evaluating prepare + loss + grad of every configuration."""
    cfgs = _configs(K)

    @jax.jit
    def run(rewards, mask, logp, old, ref, entropy):
        TRACES[K] = TRACES.get(K, 0) + 1  # Python side effect: runs once per trace
        out = {}
        for key, cfg in cfgs.items():
            targets = prepare(rewards, mask, cfg)
            (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(
                logp, old, mask, targets, cfg, ref_logp_BKT=ref, entropy_BKT=entropy)
            out[key] = (targets, value, metrics, grad)
        return out
    return run


@st.composite
def batches(draw):
    K = draw(st.sampled_from([1, 2, 4]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["binary", "normal", "huge", "equal"]))
    rewards = {"binary": lambda: rng.integers(0, 2, (B, K)).astype(float),
               "normal": lambda: rng.normal(size=(B, K)),
               "huge": lambda: 1e3 * rng.normal(size=(B, K)),
               "equal": lambda: np.repeat(rng.normal(size=(B, 1)), K, 1)}[kind]()
    if draw(st.booleans()):
        rewards[0] = rewards[0, 0]  # one unanimous group
    lengths = rng.integers(0, T + 1, (B, K))
    if draw(st.booleans()):
        lengths[-1] = 0  # a fully empty group
    mask = (np.arange(T) < lengths[..., None]).astype(np.float32)
    old = -np.abs(rng.normal(0.0, draw(st.sampled_from([0.5, 5.0, 20.0])), (B, K, T)))
    drift = draw(st.sampled_from([0.0, 0.01, 0.3, 3.0]))
    logp = old + drift * rng.normal(size=(B, K, T))
    ref = old + 0.1 * rng.normal(size=(B, K, T))
    entropy = np.abs(rng.normal(size=(B, K, T)))
    fill = draw(st.sampled_from([0.0, -np.inf, np.nan]))  # garbage in padding positions
    pad = mask == 0
    logp, old, ref, entropy = (np.where(pad, fill, x) for x in (logp, old, ref, entropy))
    return tuple(jnp.asarray(x, jnp.float32) for x in (rewards, mask, logp, old, ref, entropy))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(batch=batches())
def test_fuzz_every_objective_is_finite_with_right_shapes(batch):
    rewards, mask, logp, old, ref, entropy = batch
    K = rewards.shape[1]
    out = _run_all(K)(rewards, mask, logp, old, ref, entropy)
    padding = np.asarray(mask) == 0
    for key, (targets, value, metrics, grad) in out.items():
        assert targets.advantages_BK.shape == (B, K) and targets.target_logits_BK.shape == (B, K), key
        assert targets.tau_B.shape == (B,) and targets.zero_var_B.shape == (B,), key
        for name, x in (("targets", targets), ("loss", value), ("metrics", metrics), ("grad", grad)):
            assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(x)), (key, name)
        assert value.shape == () and grad.shape == (B, K, T), key
        assert value.dtype == jnp.float32 and grad.dtype == jnp.float32, key  # float32 in, float32 compute
        assert {"kl_target_policy", "sum_abs_c", "clip_frac", "zero_var_frac", "adv_abs_mean",
                "response_len", "entropy", "kl_ref"} <= set(metrics), key
        assert np.all(np.asarray(grad)[padding] == 0.0), key
        assert 0.0 <= float(metrics["clip_frac"]) <= 1.0 and float(metrics["kl_target_policy"]) >= -1e-5, key
    assert TRACES[K] == 1  # static shapes: new data never retraces


# Bad inputs -> clear errors ------------------------------------------------------------------------------
def _ok_batch(K=2):
    rewards = jnp.ones((B, K))
    mask = jnp.ones((B, K, T))
    return rewards, mask, jnp.zeros((B, K, T)), jnp.zeros((B, K, T))


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="Unknown objective 'ppo2'.*grpo"):
        get_objective("ppo2")
    with pytest.raises(ValueError, match="Unknown ObjectiveConfig field.*'clip_eps'"):
        get_objective("grpo", clip_eps=0.1)
    with pytest.raises(ValueError, match="baseline='gae' is not one of"):
        make_config("lpo_fwd", baseline="gae")
    with pytest.raises(ValueError, match="loss_agg='mean' is not one of"):
        make_config("grpo", loss_agg="mean")
    with pytest.raises(ValueError, match="divergence='tv'"):
        make_config("lpo_fwd", divergence="tv")
    with pytest.raises(ValueError, match="Unknown divergence 'tv'"):
        lpo_coefficients(jnp.zeros((2, 3)), jnp.zeros((2, 3)), "tv")
    with pytest.raises(ValueError, match="Unknown advantage 'gae'"):
        get_advantage_fn("gae")


def test_bad_config_values_raise():
    for bad in (dict(clip_eps_low=-0.1), dict(dual_clip_c=0.5), dict(grpo_std_ddof=2), dict(std_eps=0.0),
                dict(tau0=-1.0), dict(kl_coef=-1.0), dict(max_response_len=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_config("grpo", **bad)


@pytest.mark.parametrize("baseline", sorted(BASELINES_NEEDING_GROUPS))
def test_single_response_with_group_baseline_raises(baseline):
    rewards, mask, _, _ = _ok_batch(K=1)
    with pytest.raises(ValueError, match="needs K >= 2"):
        prepare(rewards, mask, make_config("lpo_fwd", baseline=baseline))


def test_mismatched_shapes_raise():
    rewards, mask, logp, old = _ok_batch()
    cfg = make_config("lpo_fwd")
    with pytest.raises(ValueError, match=r"rewards_BK must be a rank-2"):
        prepare(rewards[0], mask, cfg)
    with pytest.raises(ValueError, match="does not start with rewards_BK shape"):
        prepare(rewards, mask[:, :1], cfg)
    with pytest.raises(TypeError, match="ObjectiveConfig"):
        prepare(rewards, mask, {"baseline": "grpo"})
    targets = prepare(rewards, mask, cfg)
    with pytest.raises(ValueError, match=r"logp_BKT must be a rank-3"):
        loss(logp[0], old[0], mask[0], targets, cfg)
    with pytest.raises(ValueError, match="old_logp_BKT has shape"):
        loss(logp, old[:, :, :2], mask, targets, cfg)
    with pytest.raises(ValueError, match="mask_BKT has shape"):
        loss(logp, old, mask[:2], targets, cfg)
    with pytest.raises(ValueError, match="targets.advantages_BK has shape"):
        loss(logp[:2], old[:2], mask[:2], targets, cfg)
    with pytest.raises(TypeError, match="Targets returned by prepare"):
        loss(logp, old, mask, {"advantages_BK": rewards}, cfg)
    with pytest.raises(ValueError, match="needs ref_logp_BKT"):
        loss(logp, old, mask, targets, make_config("grpo", kl_coef=0.1))
    with pytest.raises(ValueError, match="needs entropy_BKT"):
        loss(logp, old, mask, targets, make_config("grpo", entropy_coef=0.1))
    with pytest.raises(ValueError, match="entropy_BKT has shape"):
        loss(logp, old, mask, targets, cfg, entropy_BKT=old[..., :1])
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(jnp.arange(4), max_len=10, cache_len=20)


def test_targets_is_a_sliceable_pytree():
    rewards, mask, _, _ = _ok_batch()
    targets = prepare(rewards, mask, make_config("grpo"))
    assert isinstance(targets, Targets)
    half = jax.tree.map(lambda x: x[:2], targets)
    assert half.advantages_BK.shape == (2, 2) and half.zero_var_B.shape == (2,)
    assert set(BASELINES) == {"grpo", "drgrpo", "rloo", "maxrl", "rpp_baseline", "constant"}
