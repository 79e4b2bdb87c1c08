"""GPS prompt predictive model: networks (Flax NNX) and the NumPyro model + guide of the ELBO (spec §6).

Generative model for RL step t (batch B_t of prompts with embeddings e_BD, c_B successes out of n rollouts):

    z_t ~ p_eta(z | H_{t-1})      learned prior: set encoder over the previous batch's [e; s] tokens;
                                  N(0, I) when there is no previous batch (t = 1)
    c_tau ~ Binomial(n, sigmoid(dec_psi(e_tau, z_t)))      for every tau in B_t
                                  (or, behind a flag, s_tau ~ N(sigmoid(logit), mse_sigma^2): PDTS-style MSE)

Guide: z_t ~ q_phi(z | H_t), the same set-encoder architecture over the current batch's [e; s] tokens.

ELBO_t = E_q sum_tau log p(c_tau | e_tau, z) - KL(q || p), estimated with S reparameterised samples. The S
samples are drawn as one [S, dim_z] site (scaled by 1/S) so the encoders run once per step instead of S times;
this is exactly Trace_ELBO(num_particles=S) for this model, at a fraction of the cost.

Set encoder: Linear([e; s] -> d_model), L pre-LayerNorm Transformer blocks (no positional encoding, no mask),
final LayerNorm, mean pool over the set, Linear -> (mu, raw); sigma = 0.1 + 0.9 * sigmoid(raw). Without
positional encoding every block is permutation-equivariant, so the pooled output is permutation-invariant.
Decoder: ReLU MLP on [e; z] -> logit. Its first layer is split as e @ W_e + z @ W_z (mathematically the
concatenation) so predicting N prompts under M samples costs N*d*H + M*N*H^2 instead of M*N*(d+z)*H.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from flax import nnx
from numpyro.contrib.module import nnx_module

# Model sizes. "paper": the ~20M-parameter GPS model (spec §6 defaults). "cpu": small enough that one
# select + update over a 10k pool stays in the tens of milliseconds on a laptop CPU. "tiny": for tests.
PRESETS = {
    "paper": dict(d_model=384, num_layers=5, num_heads=6, ffn_dim=1536, z_dim=64,
                  decoder_hidden=(1024, 1024, 1024)),
    "cpu": dict(d_model=64, num_layers=2, num_heads=4, ffn_dim=128, z_dim=16, decoder_hidden=(32, 32, 32)),
    "tiny": dict(d_model=16, num_layers=1, num_heads=2, ffn_dim=32, z_dim=4, decoder_hidden=(16, 16)),
}


class NetConfig(NamedTuple):
    """Sizes of the three GPS networks (encoder and prior share the set-encoder architecture)."""

    embed_dim: int
    d_model: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    z_dim: int
    decoder_hidden: tuple


def net_config(embed_dim, preset="cpu", **overrides):
    """NetConfig from a named preset ("paper" | "cpu" | "tiny") with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown GPS model preset {preset!r}; choose one of {sorted(PRESETS)}")
    fields = dict(PRESETS[preset], **overrides)
    unknown = set(fields) - set(NetConfig._fields)
    if unknown:
        raise TypeError(f"unknown GPS model size fields {sorted(unknown)}; valid: {NetConfig._fields[1:]}")
    cfg = NetConfig(embed_dim=int(embed_dim), **fields)
    cfg = cfg._replace(decoder_hidden=tuple(int(h) for h in cfg.decoder_hidden))
    if cfg.d_model % cfg.num_heads:
        raise ValueError(f"d_model={cfg.d_model} must be divisible by num_heads={cfg.num_heads}")
    if min(cfg.embed_dim, cfg.d_model, cfg.num_layers, cfg.ffn_dim, cfg.z_dim, *cfg.decoder_hidden) < 1:
        raise ValueError(f"all GPS model sizes must be positive, got {cfg}")
    return cfg


class _SelfAttention(nnx.Module):
    """Multi-head self-attention over a set (no mask, no positions): fused qkv projection + output projection."""

    def __init__(self, d_model, num_heads, *, rngs):
        self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)
        self.num_heads = num_heads

    def __call__(self, x_BM):
        q, k, v = jnp.split(self.qkv(x_BM).reshape(*x_BM.shape[:-1], 3 * self.num_heads, -1), 3, axis=-2)
        logits_HBB = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(jnp.float32(q.shape[-1]))
        attended = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits_HBB, axis=-1), v)
        return self.out(attended.reshape(x_BM.shape))


class _Block(nnx.Module):
    """Pre-LayerNorm Transformer block without mask or positions (permutation-equivariant over the set)."""

    def __init__(self, d_model, num_heads, ffn_dim, *, rngs):
        self.ln_attn = nnx.LayerNorm(d_model, rngs=rngs)
        self.attn = _SelfAttention(d_model, num_heads, rngs=rngs)
        self.ln_ffn = nnx.LayerNorm(d_model, rngs=rngs)
        self.ffn_in = nnx.Linear(d_model, ffn_dim, rngs=rngs)
        self.ffn_out = nnx.Linear(ffn_dim, d_model, rngs=rngs)

    def __call__(self, x_BM):
        x_BM = x_BM + self.attn(self.ln_attn(x_BM))
        return x_BM + self.ffn_out(jax.nn.gelu(self.ffn_in(self.ln_ffn(x_BM))))


class SetEncoder(nnx.Module):
    """[e; s] tokens of one batch -> diagonal Gaussian (mu f32[Z], sigma f32[Z]) over the latent z."""

    def __init__(self, cfg: NetConfig, *, rngs):
        self.inp = nnx.Linear(cfg.embed_dim + 1, cfg.d_model, rngs=rngs)
        self.blocks = nnx.List([_Block(cfg.d_model, cfg.num_heads, cfg.ffn_dim, rngs=rngs)
                                for _ in range(cfg.num_layers)])
        self.ln_out = nnx.LayerNorm(cfg.d_model, rngs=rngs)
        self.head = nnx.Linear(cfg.d_model, 2 * cfg.z_dim, rngs=rngs)

    def __call__(self, e_BD, s_B):
        x_BM = self.inp(jnp.concatenate([e_BD, s_B[..., None].astype(e_BD.dtype)], axis=-1))
        for block in self.blocks:
            x_BM = block(x_BM)
        mu, raw = jnp.split(self.head(self.ln_out(x_BM).mean(axis=-2)), 2, axis=-1)
        return mu, 0.1 + 0.9 * jax.nn.sigmoid(raw)


class Decoder(nnx.Module):
    """ReLU MLP on [e; z] -> success logit, evaluated for every (z sample, prompt) pair: f32[S, N]."""

    def __init__(self, cfg: NetConfig, *, rngs):
        hidden = cfg.decoder_hidden
        init = nnx.initializers.lecun_normal()
        w_in = init(rngs.params(), (cfg.embed_dim + cfg.z_dim, hidden[0]))  # kernel of [e; z] -> hidden
        self.w_in_e = nnx.Param(w_in[:cfg.embed_dim])
        self.w_in_z = nnx.Param(w_in[cfg.embed_dim:])
        self.b_in = nnx.Param(jnp.zeros((hidden[0],)))
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(hidden[:-1], hidden[1:])])
        self.out = nnx.Linear(hidden[-1], 1, rngs=rngs)

    def __call__(self, e_ND, z_SZ):
        h_SNH = (e_ND @ self.w_in_e[...])[None] + (z_SZ @ self.w_in_z[...] + self.b_in[...])[:, None]
        h_SNH = jax.nn.relu(h_SNH)
        for layer in self.hidden:
            h_SNH = jax.nn.relu(layer(h_SNH))
        return self.out(h_SNH)[..., 0]


class Networks(NamedTuple):
    """Eagerly built NNX modules (encoder = q_phi, prior = p_eta, decoder = p_psi)."""

    encoder: SetEncoder
    prior: SetEncoder
    decoder: Decoder


def build_networks(cfg: NetConfig, key) -> Networks:
    k_enc, k_prior, k_dec = jax.random.split(key, 3)
    return Networks(SetEncoder(cfg, rngs=nnx.Rngs(k_enc)), SetEncoder(cfg, rngs=nnx.Rngs(k_prior)),
                    Decoder(cfg, rngs=nnx.Rngs(k_dec)))


def init_param_dict(cfg: NetConfig, key) -> dict:
    """Fresh parameters as the {"<net>$params": pure dict} mapping NumPyro's nnx_module registers.

    Kernels ~ N(0, 1 / fan_in) (LeCun normal, untruncated), biases 0, LayerNorm scales 1. All kernels come
    from ONE normal draw that is sliced up: one PRNG call instead of one per tensor keeps XLA compile time
    of `init` low on CPU (each threefry call compiles separately). Same structure as build_networks.
    """
    abstract = jax.eval_shape(lambda: _module_params(build_networks(cfg, jax.random.key(0))))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    kernel_sizes = [leaf.size for path, leaf in leaves if _fan_in(path, leaf, cfg)]
    flat = jax.random.normal(key, (sum(kernel_sizes),), jnp.float32)
    out, offset = [], 0
    for path, leaf in leaves:
        fan_in = _fan_in(path, leaf, cfg)
        if fan_in:
            out.append(flat[offset:offset + leaf.size].reshape(leaf.shape) / jnp.sqrt(jnp.float32(fan_in)))
            offset += leaf.size
        else:
            out.append(jnp.full(leaf.shape, 1.0 if _leaf_name(path) == "scale" else 0.0, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def _module_params(nets):
    return {f"{name}$params": nnx.to_pure_dict(nnx.state(getattr(nets, name), nnx.Param))
            for name in Networks._fields}


def _leaf_name(path):
    return str(getattr(path[-1], "key", path[-1]))


def _fan_in(path, leaf, cfg):
    """Fan-in of a kernel leaf (0 for biases and LayerNorm scales)."""
    name = _leaf_name(path)
    if name in ("w_in_e", "w_in_z"):
        return cfg.embed_dim + cfg.z_dim  # the two halves of one [e; z] -> hidden kernel
    return leaf.shape[0] if name == "kernel" else 0


def count_params(cfg: NetConfig) -> dict:
    """Parameter count per network and in total, from shapes only (jax.eval_shape; no compute)."""
    shapes = jax.eval_shape(lambda k: init_param_dict(cfg, k), jax.random.key(0))
    counts = {name.split("$")[0]: sum(int(x.size) for x in jax.tree.leaves(tree)) for name, tree in shapes.items()}
    counts["total"] = sum(counts.values())
    return counts


def prior_params(nets_prior, e_prev_BD, s_prev_B, has_prev):
    """p_eta(z_t | H_{t-1}) as (mu, sigma); exactly N(0, I) when `has_prev` is False."""
    mu, sigma = nets_prior(e_prev_BD, s_prev_B)
    return jnp.where(has_prev, mu, 0.0), jnp.where(has_prev, sigma, 1.0)


def _particles(mu_Z, sigma_Z, num_samples):
    shape = (num_samples,) + mu_Z.shape
    return dist.Normal(jnp.broadcast_to(mu_Z, shape), jnp.broadcast_to(sigma_Z, shape)).to_event(2)


def make_model_and_guide(nets: Networks, *, num_z_samples=20, likelihood="binomial", mse_sigma=0.5 ** 0.5):
    """NumPyro (model, guide) for one RL step; both take (e_prev_BD, s_prev_B, has_prev, e_BD, c_B, n).

    likelihood: "binomial" (c ~ Binomial(n, sigmoid(logit)); default) or "mse" (s = c/n ~ N(sigmoid(logit),
    mse_sigma^2); with the default sigma^2 = 1/2 the negative log-likelihood is the sum of squared errors
    plus a constant, i.e. PDTS's MSE loss).
    """
    if likelihood not in ("binomial", "mse"):
        raise ValueError(f"likelihood must be 'binomial' or 'mse', got {likelihood!r}")
    scale = 1.0 / num_z_samples

    def model(e_prev_BD, s_prev_B, has_prev, e_BD, c_B, n):
        prior = nnx_module("prior", nets.prior)
        decoder = nnx_module("decoder", nets.decoder)
        mu_p, sigma_p = prior_params(prior, e_prev_BD, s_prev_B, has_prev)
        with numpyro.handlers.scale(scale=scale):
            z_SZ = numpyro.sample("z", _particles(mu_p, sigma_p, num_z_samples))
            logits_SB = decoder(e_BD, z_SZ)
            if likelihood == "binomial":
                obs = jnp.broadcast_to(c_B, logits_SB.shape)
                numpyro.sample("c", dist.Binomial(n, logits=logits_SB).to_event(2), obs=obs)
            else:
                obs = jnp.broadcast_to(c_B / n, logits_SB.shape)
                numpyro.sample("s", dist.Normal(jax.nn.sigmoid(logits_SB), mse_sigma).to_event(2), obs=obs)

    def guide(e_prev_BD, s_prev_B, has_prev, e_BD, c_B, n):
        encoder = nnx_module("encoder", nets.encoder)
        mu_q, sigma_q = encoder(e_BD, c_B / n)
        with numpyro.handlers.scale(scale=scale):
            numpyro.sample("z", _particles(mu_q, sigma_q, num_z_samples))

    return model, guide


def kl_diag_normal(mu_q, sigma_q, mu_p, sigma_p):
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) summed over the last axis (diagonal Gaussians)."""
    return dist.kl_divergence(dist.Normal(mu_q, sigma_q).to_event(1), dist.Normal(mu_p, sigma_p).to_event(1))


def apply_networks(params, nets: Networks):
    """Bound callables (encoder, prior, decoder) using the SVI params dict instead of the eager ones."""
    with numpyro.handlers.substitute(data=params):
        return Networks(*(nnx_module(name, getattr(nets, name)) for name in Networks._fields))
