"""Synthetic prompt dynamics for comparing selectors without an LLM (spec §8).

    logit gamma_{tau,t} = -d_tau + g t + a x_tau + b sum_{tau'} K(e_tau, e_tau') x_tau' / N,   c ~ Binomial(n, gamma)
    d_tau = mu_d + sigma_d (rho z_tau + sqrt(1 - rho^2) (sqrt(s) u_tau + sqrt(1 - s) eps_tau)),   eps ~ N(0, 1)
    z = standardised w.e (linear),  u = standardised smooth nonlinear function of e (random Fourier features,
    orthogonalised to z),  x_tau = times tau was trained,  K(e, e') = exp(-|e - e'|^2 / l^2)

- difficulty is partly predictable from the embedding: the linear part has corr(w.e, d) = rho (`embed_corr`,
  0.2 as in the spec). [ours] A smooth nonlinear part (share s = `nonlinear_share` of the rest, default 0.2,
  uncorrelated with w.e) models topic-level difficulty that a nonlinear shared predictor can learn; with s = 0
  no embedding-based predictor can exceed a held-out Spearman of ~rho = 0.2 (the harness logs this ceiling
  as oracle_heldout_spearman; ~0.49 with the defaults);
- strength of the embedding signal, decision [ours]: the spec fixes only the linear part (rho = 0.2, the
  paper's measured embedding-difficulty correlation) and leaves the rest open. Default s = 0.2, i.e. the
  embedding explains R^2 = rho^2 + (1 - rho^2) s = 0.23 of the difficulty variance (corr 0.48): enough for the
  paper's "significant Spearman within a few steps" (oracle held-out Spearman ~0.49), while most of a prompt's
  difficulty stays prompt-specific, as with real prompts. At this setting no embedding-only predictor can
  raise the in-pool effective ratio much: the oracle (true predictable difficulty, known drift, the GPS
  acquisition) reaches ~1.1x Uniform over the first 10 steps of the 10k-prompt benchmark; per-prompt
  memory (MoPPS, DPS) reaches 1.6-1.7x because each training prompt is re-sampled ~2.8 times in 100 steps.
  Stronger signals are one parameter away for sweeps: at s = 0.8 (oracle held-out Spearman 0.89; one seed)
  GPS reaches 1.51x Uniform with held-out Spearman 0.70, MoPPS 1.59x, DPS 1.69x;
- sigma_d = 6, mu_d = 2 put ~45% of prompts near gamma = 0 and ~20% near 1 at the start, so mixed groups
  are a minority (~30% at k = 8) under uniform sampling and selection has something to gain;
- g t: global policy drift; a x: self-exposure (only trained prompts gain it, not DS discards);
- kernel transfer: training a prompt helps similar prompts. It is maintained exactly and incrementally:
  each step adds (b / N) K(E, E[trained]) @ 1 to a per-prompt transfer array, O(N B d) per step (10k x 256 x 32
  is ~0.1 GFLOP), so no approximation is needed at N = 10k;
- embeddings: synthetic Gaussian topic mixture by default (log-normal topic sizes, so some regions of
  embedding space are dense and receive more transfer), or pass your own f32[N, d] (e.g. WordLlama);
- a held-out split (never offered as candidates, never trained) measures how well a shared predictor
  generalises: its gamma moves only by drift and transfer.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@dataclasses.dataclass(frozen=True)
class SimConfig:
    num_prompts: int = 10_000
    dim: int = 32
    num_topics: int = 16
    topic_spread: float = 0.5  # within-topic std relative to the between-topic std
    topic_size_spread: float = 1.0  # std of log topic sizes
    heldout_fraction: float = 0.1
    difficulty_mean: float = 2.0
    difficulty_std: float = 6.0
    embed_corr: float = 0.2
    nonlinear_share: float = 0.2
    nonlinear_lengthscale: float = 0.5
    drift: float = 0.005  # g, logit per step
    self_exposure: float = 0.3  # a, logit per training
    transfer: float = 5.0  # b
    lengthscale: float = 0.7  # l, in embedding units (within-topic distance^2 ~ 2 spread^2 = 0.5)

    def __post_init__(self):
        if self.num_prompts < 2 or self.dim < 1 or self.num_topics < 1:
            raise ValueError(f"need num_prompts >= 2, dim >= 1, num_topics >= 1: {self}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must lie in [0, 1), got {self.heldout_fraction}")
        if not -1.0 <= self.embed_corr <= 1.0 or not 0.0 <= self.nonlinear_share <= 1.0:
            raise ValueError(f"need |embed_corr| <= 1 and 0 <= nonlinear_share <= 1: {self}")
        if self.difficulty_std < 0 or self.lengthscale <= 0 or self.nonlinear_lengthscale <= 0:
            raise ValueError(f"need difficulty_std >= 0 and positive lengthscales: {self}")

    @property
    def num_heldout(self) -> int:
        return int(round(self.heldout_fraction * self.num_prompts))


@struct.dataclass
class SimState:
    embeddings_ND: jnp.ndarray
    difficulty_N: jnp.ndarray
    predictable_difficulty_N: jnp.ndarray  # the part of d that is a function of the embedding
    linear_score_N: jnp.ndarray  # z = standardised w.e (corr(z, d) = embed_corr)
    exposure_N: jnp.ndarray  # f32 times trained
    transfer_N: jnp.ndarray  # f32 b * sum_tau' K x_tau' / N
    step: jnp.ndarray  # i32
    train_ids: jnp.ndarray  # i32[N - H]: candidate pool
    heldout_ids: jnp.ndarray  # i32[H]: never offered, never trained
    drift: float = struct.field(pytree_node=False, default=0.01)
    self_exposure: float = struct.field(pytree_node=False, default=0.25)
    transfer: float = struct.field(pytree_node=False, default=20.0)
    lengthscale: float = struct.field(pytree_node=False, default=0.7)


def synthetic_embeddings(key, cfg: SimConfig):
    """Gaussian topic mixture, f32[N, d], |e|^2 ~ 1 + spread^2; log topic sizes ~ N(0, topic_size_spread^2)."""
    k_w, k_t, k_mu, k_xi = jax.random.split(key, 4)
    log_weights = cfg.topic_size_spread * jax.random.normal(k_w, (cfg.num_topics,))  # log-normal topic sizes
    topic = jax.random.categorical(k_t, log_weights, shape=(cfg.num_prompts,))
    mu = jax.random.normal(k_mu, (cfg.num_topics, cfg.dim)) / np.sqrt(cfg.dim)
    xi = jax.random.normal(k_xi, (cfg.num_prompts, cfg.dim)) * cfg.topic_spread / np.sqrt(cfg.dim)
    return mu[topic] + xi


def make_simulator(cfg: SimConfig, key, embeddings=None) -> SimState:
    """A fresh simulated pool. `embeddings` f32[N, d] replaces the synthetic ones if given."""
    if embeddings is not None and (np.ndim(embeddings) != 2 or np.shape(embeddings)[0] != cfg.num_prompts):
        raise ValueError(f"embeddings must be f32[{cfg.num_prompts}, d], got shape {np.shape(embeddings)}.")
    return _build(cfg, key, None if embeddings is None else jnp.asarray(embeddings, jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _build(cfg: SimConfig, key, embeddings) -> SimState:
    k_e, k_w, k_rff, k_eps, k_split = jax.random.split(key, 5)
    emb = synthetic_embeddings(k_e, cfg) if embeddings is None else embeddings
    z = _standardise(emb @ jax.random.normal(k_w, (emb.shape[1],)))
    u = _standardise(_random_fourier_function(k_rff, emb, cfg.nonlinear_lengthscale))
    u = _standardise(u - jnp.mean(u * z) * z)  # orthogonal to the linear part: corr(w.e, d) stays rho
    eps = jax.random.normal(k_eps, (cfg.num_prompts,))
    rho, s = cfg.embed_corr, cfg.nonlinear_share
    predictable = cfg.difficulty_std * (rho * z + np.sqrt((1.0 - rho**2) * s) * u)
    d = cfg.difficulty_mean + predictable + cfg.difficulty_std * np.sqrt((1.0 - rho**2) * (1.0 - s)) * eps
    perm = jax.random.permutation(k_split, cfg.num_prompts).astype(jnp.int32)
    h = cfg.num_heldout
    zeros = jnp.zeros((cfg.num_prompts,), jnp.float32)
    return SimState(embeddings_ND=emb, difficulty_N=d, predictable_difficulty_N=predictable, linear_score_N=z,
                    exposure_N=zeros, transfer_N=zeros,
                    step=jnp.int32(0), train_ids=jnp.sort(perm[h:]), heldout_ids=jnp.sort(perm[:h]),
                    drift=cfg.drift, self_exposure=cfg.self_exposure, transfer=cfg.transfer,
                    lengthscale=cfg.lengthscale)


def success_logit(sim: SimState):
    """logit gamma for every prompt at the current step, f32[N]."""
    return -sim.difficulty_N + sim.drift * sim.step + sim.self_exposure * sim.exposure_N + sim.transfer_N


def true_success(sim: SimState):
    return jax.nn.sigmoid(success_logit(sim))


def oracle_embedding_logit(sim: SimState):
    """Best prediction of an untrained prompt's logit from its embedding and the shared history alone."""
    return -sim.predictable_difficulty_N + sim.transfer_N


def _standardise(x):
    return (x - x.mean()) / (x.std() + 1e-8)


def _random_fourier_function(key, emb_ND, lengthscale: float, num_features: int = 128):
    """A random smooth function of the embedding: sum_f v_f cos(w_f . e + b_f), w_f ~ N(0, I / l^2)."""
    k_w, k_b, k_v = jax.random.split(key, 3)
    w = jax.random.normal(k_w, (emb_ND.shape[1], num_features)) / lengthscale
    b = jax.random.uniform(k_b, (num_features,), maxval=2 * jnp.pi)
    return jnp.cos(emb_ND @ w + b) @ jax.random.normal(k_v, (num_features,))


def env_rollout(sim: SimState, ids_B, key, n: int):
    """Successes c ~ Binomial(n, gamma) for prompts ids_B; does not change the environment."""
    gamma = true_success(sim)[ids_B]
    # Exact Binomial as a sum of n Bernoulli draws (n is small); jax.random.binomial's rejection sampler
    # costs seconds of compile time inside every scan.
    return jnp.sum(jax.random.uniform(key, (ids_B.shape[0], n)) < gamma[:, None], axis=1, dtype=jnp.int32)


def env_train(sim: SimState, ids_B, trained_B) -> SimState:
    """One RL step of training on prompts ids_B where trained_B: exposure, kernel transfer, drift clock."""
    m = trained_B.astype(jnp.float32)
    e_sel = sim.embeddings_ND[ids_B]
    d2 = (jnp.sum(sim.embeddings_ND**2, -1)[:, None] + jnp.sum(e_sel**2, -1)[None, :]
          - 2.0 * sim.embeddings_ND @ e_sel.T)
    kern = jnp.exp(-jnp.maximum(d2, 0.0) / sim.lengthscale**2)
    n_prompts = sim.embeddings_ND.shape[0]
    return sim.replace(exposure_N=sim.exposure_N.at[ids_B].add(m),
                       transfer_N=sim.transfer_N + (sim.transfer / n_prompts) * (kern @ m),
                       step=sim.step + 1)


def env_step(sim: SimState, selected_B, key, n: int):
    """Spec signature: roll out the selected prompts, train on all of them. Returns (sim, successes)."""
    successes = env_rollout(sim, selected_B, key, n)
    return env_train(sim, selected_B, jnp.ones(selected_B.shape, bool)), successes
