"""GPS networks and NumPyro model/guide (spec §7 items 12, 13, 17: invariance, KL = 0, ~20M parameters)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro.infer import Trace_ELBO, TraceMeanField_ELBO

from lpo_jax.selection import gps_model as gm

D, B, K = 6, 12, 8
CFG = gm.net_config(D, "tiny")
NETS = nnx.eval_shape(lambda: gm.build_networks(CFG, jax.random.key(0)))


@pytest.fixture(scope="module")
def setup():
    params = jax.jit(lambda k: gm.init_param_dict(CFG, k))(jax.random.key(1))
    rng = np.random.default_rng(0)
    e = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
    c = jnp.asarray(rng.integers(0, K + 1, size=B), jnp.float32)
    return params, e, c


@jax.jit
def _set_encoders(params, e, s):
    encoder, prior, _ = gm.apply_networks(params, NETS)
    return encoder(e, s), prior(e, s)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_encoder_and_prior_are_permutation_invariant(setup, seed):
    params, e, c = setup
    perm = np.random.default_rng(seed).permutation(B)
    s = c / K
    (mq, sq), (mp, sp) = _set_encoders(params, e, s)
    (mq2, sq2), (mp2, sp2) = _set_encoders(params, e[perm], s[perm])
    for a, b in [(mq, mq2), (sq, sq2), (mp, mp2), (sp, sp2)]:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # ... but not invariant to changing one prompt's outcome (the pooled output reads the tokens)
    (mq3, _), _ = _set_encoders(params, e, s.at[0].add(0.5))
    assert not np.allclose(np.asarray(mq3), np.asarray(mq))
    assert mq.shape == (CFG.z_dim,) and bool(jnp.all((sq > 0.1) & (sq < 1.0)))  # sigma = 0.1 + 0.9 sigmoid


def _elbo_losses(params, e, c, has_prev, likelihood="binomial"):
    model, guide = gm.make_model_and_guide(NETS, num_z_samples=20, likelihood=likelihood)
    args = (e, c / K, has_prev, e, c, jnp.float32(K))  # previous batch = current batch
    key = jax.random.key(7)
    return (Trace_ELBO().loss(key, params, model, guide, *args),
            TraceMeanField_ELBO().loss(key, params, model, guide, *args))


def test_kl_is_zero_when_posterior_equals_prior(setup):
    params, e, c = setup
    tied = dict(params, **{"encoder$params": params["prior$params"]})  # q_phi == p_eta on the same batch
    (mq, sq), (mp, sp) = _set_encoders(tied, e, c / K)
    assert float(gm.kl_diag_normal(mq, sq, mp, sp)) == 0.0
    losses = jax.jit(_elbo_losses, static_argnums=(4,))
    mc_tied, analytic_tied = losses(tied, e, c, jnp.asarray(True), "binomial")
    # MC (log p - log q per sample) and analytic KL terms are both exactly 0: the ELBO is the likelihood alone
    np.testing.assert_allclose(float(mc_tied), float(analytic_tied), rtol=1e-6)
    mc, analytic = losses(params, e, c, jnp.asarray(True), "binomial")
    (mq, sq), (mp, sp) = _set_encoders(params, e, c / K)
    kl = float(gm.kl_diag_normal(mq, sq, mp, sp))
    assert kl > 1e-3 and np.isfinite(float(mc)) and abs(float(analytic) - float(mc)) > 1e-6
    mse_mc, mse_analytic = losses(params, e, c, jnp.asarray(False), "mse")  # the MSE likelihood flag
    assert np.isfinite(float(mse_mc)) and np.isfinite(float(mse_analytic)) and float(mse_mc) != float(mc)


def test_kl_matches_closed_form():
    rng = np.random.default_rng(0)
    mq, mp = rng.normal(size=(2, 5))
    sq, sp = rng.uniform(0.1, 1.0, size=(2, 5))
    ref = np.sum(np.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5)
    np.testing.assert_allclose(float(gm.kl_diag_normal(mq, sq, mp, sp)), ref, rtol=1e-5)


def test_empty_history_prior_is_standard_normal(setup):
    params, e, c = setup
    _, prior, _ = gm.apply_networks(params, NETS)
    mu, sigma = jax.jit(lambda e, s: gm.prior_params(prior, e, s, jnp.asarray(False)))(e, c / K)
    np.testing.assert_array_equal(np.asarray(mu), 0.0)
    np.testing.assert_array_equal(np.asarray(sigma), 1.0)


def test_decoder_split_first_layer_equals_concatenated_mlp(setup):
    params, e, _ = setup
    z = jax.random.normal(jax.random.key(3), (5, CFG.z_dim))
    logits = jax.jit(lambda p, e, z: gm.apply_networks(p, NETS).decoder(e, z))(params, e, z)
    p = jax.tree.map(np.asarray, params["decoder$params"])
    x = np.concatenate([np.broadcast_to(np.asarray(e), (5, B, D)), np.broadcast_to(np.asarray(z)[:, None], (5, B, 4))],
                       axis=-1)
    h = np.maximum(x @ np.concatenate([p["w_in_e"], p["w_in_z"]]) + p["b_in"], 0)
    for layer in p["hidden"].values():
        h = np.maximum(h @ layer["kernel"] + layer["bias"], 0)
    ref = (h @ p["out"]["kernel"] + p["out"]["bias"])[..., 0]
    assert logits.shape == (5, B)
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-4, atol=1e-5)


def test_init_matches_module_structure_and_scales(setup):
    params, _, _ = setup
    reference = nnx.eval_shape(lambda: gm._module_params(gm.build_networks(CFG, jax.random.key(0))))
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(lambda a: a.shape, reference)
    block = params["encoder$params"]["blocks"][0]
    np.testing.assert_array_equal(np.asarray(block["ln_attn"]["scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(block["attn"]["qkv"]["bias"]), 0.0)
    kernel = np.asarray(block["attn"]["qkv"]["kernel"])  # [16, 48]: fan_in 16, LeCun std 1/4
    np.testing.assert_allclose(kernel.std(), 1 / 4, rtol=0.1)  # 768 draws: sample-std error ~2.5%
    assert abs(kernel.mean()) < 0.05


def test_paper_preset_has_about_20m_parameters():
    counts = gm.count_params(gm.net_config(256, "paper"))  # jax.eval_shape: shapes only, no compute
    assert 19.5e6 < counts["total"] < 21.0e6, counts
    assert counts["encoder"] == counts["prior"] and 8.5e6 < counts["encoder"] < 9.5e6
    assert 2.3e6 < counts["decoder"] < 2.5e6
    assert gm.count_params(gm.net_config(256, "cpu"))["total"] < 0.5e6


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="unknown GPS model preset"):
        gm.net_config(8, "huge")
    with pytest.raises(ValueError, match="divisible"):
        gm.net_config(8, "tiny", d_model=15)
    with pytest.raises(TypeError, match="unknown GPS model size"):
        gm.net_config(8, "tiny", depth=3)
    with pytest.raises(ValueError, match="likelihood"):
        gm.make_model_and_guide(NETS, likelihood="poisson")
