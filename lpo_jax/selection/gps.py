"""GPS selector (Generalizable Predictive Prompt Selection, spec §6): shared predictive model + max-sum.

    selector = make_gps(embeddings_ND, batch_size=256, n_rollouts=8, preset="cpu", lambda_div=0.1)
    state = selector.init(key)
    state, selected_B, pred_M = selector.select(state, candidates_M, key)   # Eq. 10 + greedy max-sum
    state = selector.update(state, selected_B, successes_B, n)              # G Adam steps on the ELBO

select: z^(m) ~ p_eta(z | last batch) for m = 1..M (N(0, I) before the first update), predicted success
g_c = mean_m sigmoid(dec(e_c, z^(m))) for every candidate in one batched call, then greedy max-sum
(acquisition.py) with D_inter against the last W batches. update: G SVI (Adam) steps on the negative ELBO of
gps_model.py, step g on the (previous, current) batch pair of RL step t - g (replay=True; replay=False: all
on the current pair), then the current batch becomes "last" and enters the rings.
All state (SVIState with params, Adam moments and its PRNG key; last batch; history, replay and calibration
rings; per-prompt counts f32[N]) is one pytree, so it checkpoints with the rest; select/update are jittable
with static shapes and scan-friendly.

Per-prompt memory [ours] (memory=True; off by default, so the default is the paper's GPS). GPS's prediction
g of a prompt becomes the mean of a Beta(kappa g, kappa (1 - g)) prior (kappa = memory_kappa), updated with the
prompt's own decayed counts s, f (s <- decay s + c, f <- decay f + n - c on selected prompts only, as MoPPS
forgets; decay = memory_decay): the prediction the acquisition ranks is the posterior mean
    (kappa g + s) / (kappa + s + f),
so never-selected prompts (s = f = 0) get plain GPS and a prompt's own outcomes outweigh the shared model after
about kappa observations. Counts are tracked always (they also mark first observations); only select reads
them. Why: with the spec's weak embedding signal (corr(w.e, d) ~ 0.2) no embedding-only predictor raises the
effective ratio much on the simulator, while each prompt there is re-selected ~2.6 times in 100 steps. Sweep
(benchmarks/selection.py, seed 0, effective ratio; uniform 0.323, plain GPS ~0.37): kappa 2 / 8 / 32 at
decay 1: 0.526 / 0.534 / 0.473; at decay 0.7: kappa 2 / 4 / 8: 0.589 / 0.601 / 0.582; decay 0.5: kappa 4 / 8:
0.611 / 0.571. Forgetting matters because training a prompt moves its success rate (self-exposure); kappa 4
with decay 0.7 (DPS's large-pool decay) is the default of the option. 3 seeds: 0.599 = 1.87x uniform (plain
GPS 0.376, MoPPS 0.507, DPS 0.546); held-out Spearman drops from 0.35 to 0.23, as the batches the network
trains on are now chosen by the memory too.
Test-time calibration [ours]: update also stores, for prompts trained for the first time, the Eq. 10
prediction made before their rollouts and the count then observed (a ring of calibration_size pairs);
`calibration(state)` fits test_time.fit_logit_calibration on it and `predictive(state, e, key)` returns the
calibrated logit-normal predictive (nodes, weights) for test_time.allocate_test_samples. Why: the point
predictions of Eq. 10 are over-confident on prompts the model never trained on: it trains only on the prompts
it selects (predicted near 0.5), nothing anchors the rest, and by step 60 of the notebook's run most unseen
prompts are predicted below 0.01 while their true mean success is 0.3. Measured (benchmarks/
test_time_allocation.py, notebook setting, mean of 3 seeds; expected fraction of held-out prompts solved at
4 samples each on average): uniform 0.558, Eq. 10 point predictions 0.510, calibrated 0.555, oracle 0.619
(seed 0: 0.552 / 0.505 / 0.551 / 0.611; a ring of 1024 pairs, spanning more of the drifting model's history:
0.541). On seed 0 a calibration fitted on the held-out prompts' own outcomes (unavailable in practice) reaches
0.5525: GPS's held-out ranking there (Spearman ~0.27) holds too little information for any allocation from
it to beat uniform by more than noise; calibration turns a loss into a tie.

Decisions where the spec is open (all options):
- Distances for D_intra/D_inter are measured in units of the pool's mean pairwise embedding distance
  (normalize_distances=True), so lambda_div does not depend on the embedding scale; False = raw ||.||_2.
- The likelihood's n is the `n` passed to update (so DS-style partial groups work); n_rollouts only shapes
  the example arguments at init.
- elbo="trace" is NumPyro's Trace_ELBO (Monte-Carlo KL); "mean_field" uses TraceMeanField_ELBO (analytic KL).
- Model size: preset="cpu" is the default (~0.2M parameters: encoder/prior d_model 64, 2 layers, 4 heads,
  FFN 128; z 16; decoder 3x32); preset="paper" is the spec's ~20M model. Measured select + update per step,
  B = 256 over 9k candidates, G = 1: cpu preset on 2 CPU cores 35 ms (d = 32) / 42 ms (d = 256); paper
  preset on one H200 over 40k candidates 19 ms (each further Adam step adds one ELBO step to the update).
- Learning rate: the preset's (paper 1e-4 as in the spec; cpu and tiny 3e-3, because at 1e-4 the small
  model barely learns in 100 RL steps of one Adam step each).
- Training per RL step: G = 8 Adam steps with replay (spec: G = 1 on the current pair). Diagnosed on the
  simulator (10k prompts, 100 steps, seed 0): with G = 1 the model learned about half of what the embeddings
  predict (held-out Spearman 0.26 against an oracle's 0.49; Spearman vs true gamma over the pool 0.25); G = 4
  on the current pair 0.29 / 0.33; G = 4 with replay 0.30 / 0.36; G = 8 with replay (and lambda_div 0.1)
  0.35 / 0.43 (0.53 over the last 25 steps), the effective ratio 0.352 -> 0.376. Replay keeps each step's
  ELBO an exact ELBO of one (previous, current) pair of the history, just of an earlier step: it only spends
  more gradient steps on the recent shared history. Cost: select + update over 9k candidates on the shared
  2-core CPU (load ~9) 205-300 ms at G = 8 against 60-74 ms at G = 1 (same process); G = 4 with replay gave
  0.371 / 0.36 on seed 0 at about half the G = 8 cost. Either is negligible next to LLM rollouts.
- lambda_div = 0.1 (spec: 1, "tune"). With distances in units of the pool's mean pairwise distance the
  greedy diversity gain of a candidate is at most ~3 lambda_div / B (D_intra 2/B + D_inter 1/B). After 100
  simulator steps the utility u = -(g - 0.5)^2 of the B-th best candidate is -0.002 and that of the 4B-th
  -0.03: at lambda_div = 1 the diversity gain (~0.012) overrides the predicted difficulty among the top few B
  candidates; at 0.1 it breaks near-ties. Measured (replay, seed 0; effective ratio / held-out Spearman):
  G = 4, lambda_div 1: 0.360 / 0.30; G = 8, lambda_div 0.3 / 0.1 / 0: 0.383 / 0.34, 0.376 / 0.35,
  0.388 / 0.37 (single-seed differences of ~0.01 are noise). No diversity scored best on the simulator, which
  has no redundancy cost for similar prompts; the paper's ablation finds diversity helps on real data, so it
  stays on, small.
- Acquisition cost: distances use the top-64 PCA directions of the embeddings (distance_dim=64; exact when
  d <= 64) and D_inter is the RMS distance to each history batch (exact, O(M W d), through the batch's
  centroid and spread) instead of the mean over all W*B history prompts (O(M W B d)). With the spec's exact
  forms (distance_dim=None, inter_distance="mean") the 2-core CPU step at d = 256 goes from 42 to 132 ms.
- Network inputs are the embeddings z-scored per dimension with the pool's statistics (standardize_inputs);
  predict() applies the same transform to new prompts.
"""
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.svi import SVIState

from lpo_jax.selection import acquisition, gps_model, test_time
from lpo_jax.selection.base import Selector
from lpo_jax.selection.validation import validate_candidates, validate_update

DEFAULTS = dict(
    preset="cpu",  # model size preset: "cpu" | "paper" | "tiny"; size fields below override it
    num_z_samples=20,  # reparameterised samples in the ELBO
    num_pred_samples=8,  # M in Eq. 10; 1 = Thompson-style single draw
    adam_steps=8,  # G Adam steps per RL step (spec: 1; see the module docstring)
    replay=True,  # True: step g trains on the (previous, current) pair of RL step t - g, so the last G
    # batches are replayed and each is trained on G times over its life; False: all G steps on the current pair
    learning_rate=None,  # None: the preset's (PRESET_LEARNING_RATES)
    likelihood="binomial",  # or "mse"
    mse_sigma=0.5 ** 0.5,
    elbo="trace",  # "trace" (Trace_ELBO) | "mean_field" (TraceMeanField_ELBO, analytic KL)
    lambda_div=0.1,  # spec: 1, "tune" (see the module docstring)
    history_window=4,  # W
    target=0.5,  # u(g) = -(g - target)^2
    normalize_distances=True,
    inter_distance="rms",  # D_inter: "mean" distance to each history prompt (spec) | "rms" (O(M*W*d))
    distance_dim=64,  # None: distances in the full embedding space; int r: in its top-r PCA subspace
    standardize_inputs=True,  # networks see per-dimension z-scored embeddings (pool mean/std)
    memory=False,  # [ours] combine GPS's prediction with each prompt's own decayed counts (module docstring)
    memory_kappa=4.0,  # concentration of the Beta prior whose mean is GPS's prediction
    memory_decay=0.7,  # counts <- decay * counts + new counts, selected prompts only (MoPPS-style)
    calibration_size=256,  # first-observation predict-then-observe pairs kept for test-time calibration
)
PRESET_LEARNING_RATES = {"paper": 1e-4, "cpu": 3e-3, "tiny": 3e-3}
_SIZE_FIELDS = ("d_model", "num_layers", "num_heads", "ffn_dim", "z_dim", "decoder_hidden")


@flax.struct.dataclass
class GPSState:
    svi_state: Any  # numpyro SVIState(optim_state, mutable_state=None, rng_key)
    last_idx_B: jax.Array  # i32[B] the most recent trained batch
    last_s_B: jax.Array  # f32[B] its observed success rates c / n
    has_last: jax.Array  # bool[] False until the first update (prior is then N(0, I))
    hist_idx_WB: jax.Array  # i32[W, B] ring of the last W batches (for D_inter)
    hist_valid_W: jax.Array  # bool[W]
    step: jax.Array  # i32[] number of updates so far
    neg_elbo: jax.Array  # f32[] loss of the current batch's Adam step (NaN before the first update)
    replay_idx_RB: jax.Array  # i32[R, B] ring of the last R = G + 1 trained batches (R = 1 without replay)
    replay_c_RB: jax.Array  # f32[R, B] their success counts
    replay_n_R: jax.Array  # f32[R] their rollouts per prompt (1 where empty, so c / n stays finite)
    successes_N: jax.Array  # f32[N] decayed success counts per prompt (tracked always; used if memory=True)
    failures_N: jax.Array  # f32[N] decayed failure counts per prompt
    calib_pred_C: jax.Array  # f32[C] ring of Eq. 10 predictions for prompts never trained before, each made
    # before the prompt's first rollouts (with the parameters and prior that selected it)
    calib_c_C: jax.Array  # f32[C] the success count then observed
    calib_n_C: jax.Array  # f32[C] out of n rollouts (1 where empty)
    calib_count: jax.Array  # i32[] pairs written so far (ring slots < min(count, C) are valid)


class GPS(NamedTuple):
    """Everything make_gps builds: the Selector plus the pieces tests, diagnostics and test-time use need."""

    selector: Selector
    predict: Callable  # (state, e_PD, key) -> f32[P] predicted success for any prompts' raw embeddings
    predictive: Callable  # (state, e_PD, key) -> (nodes f32[P, S], weights f32[S]) calibrated, for test time
    calibration: Callable  # state -> test_time.LogitCalibration fitted on the state's calibration ring
    params: Callable  # state -> {"encoder$params", "prior$params", "decoder$params"}
    networks: gps_model.Networks
    net_config: gps_model.NetConfig
    svi: SVI
    hparams: dict
    inputs_ND: jax.Array  # the pool's embeddings as the networks see them (standardised if configured)


def make_gps(embeddings_ND, *, batch_size, n_rollouts=8, **hparams) -> Selector:
    """GPS Selector over a pool with embeddings f32[N, d] (see module docstring and DEFAULTS for hparams).

    num_prompts= may be passed (as to the other selectors); it must equal N.
    """
    return build_gps(embeddings_ND, batch_size=batch_size, n_rollouts=n_rollouts, **hparams).selector


def build_gps(embeddings_ND, *, batch_size, n_rollouts=8, num_prompts=None, **hparams) -> GPS:
    """Like make_gps, but also returns the predictor, parameter accessor, networks and SVI object."""
    E_np, hp = _validate(embeddings_ND, batch_size, n_rollouts, hparams)
    if num_prompts is not None and num_prompts != E_np.shape[0]:
        raise ValueError(f"num_prompts={num_prompts} does not match the embeddings' N={E_np.shape[0]}")
    num_prompts, embed_dim = E_np.shape
    B, W, C = int(batch_size), hp["history_window"], hp["calibration_size"]
    R = hp["adam_steps"] + 1 if hp["replay"] else 1
    cfg = gps_model.net_config(embed_dim, hp["preset"], **{k: hp[k] for k in _SIZE_FIELDS if k in hp})
    # Structure only (abstract arrays, nothing computed): init(key) draws the weights that SVI optimises.
    nets = nnx.eval_shape(lambda: gps_model.build_networks(cfg, jax.random.key(0)))
    model, guide = gps_model.make_model_and_guide(nets, num_z_samples=hp["num_z_samples"],
                                                  likelihood=hp["likelihood"], mse_sigma=hp["mse_sigma"])
    loss = Trace_ELBO() if hp["elbo"] == "trace" else TraceMeanField_ELBO()
    learning_rate = PRESET_LEARNING_RATES[hp["preset"]] if hp["learning_rate"] is None else hp["learning_rate"]
    svi = SVI(model, guide, optax.adam(learning_rate), loss)
    E_dist_ND = jnp.asarray(acquisition.distance_space(E_np, hp["distance_dim"], hp["normalize_distances"]))
    if hp["standardize_inputs"]:
        mean_D, std_D = E_np.mean(0), np.maximum(E_np.std(0), 1e-6)
    else:
        mean_D, std_D = np.zeros(embed_dim, np.float32), np.ones(embed_dim, np.float32)
    E_ND = jnp.asarray((E_np - mean_D) / std_D, jnp.float32)  # what the networks see
    mean_D, std_D = jnp.asarray(mean_D, jnp.float32), jnp.asarray(std_D, jnp.float32)

    zeros_i, zeros_f = jnp.zeros((B,), jnp.int32), jnp.zeros((B,), jnp.float32)
    example = (E_ND[zeros_i], zeros_f, jnp.asarray(False), E_ND[zeros_i], zeros_f, jnp.float32(n_rollouts))
    # Trace (no compute) svi.init once: it sets svi.constrain_fn (identity here: all params unconstrained),
    # which svi.update needs; init(key) then builds the SVIState directly (params + Adam state + key).
    jax.eval_shape(lambda k: svi.init(k, *example, init_params=gps_model.init_param_dict(cfg, k)),
                   jax.random.key(0))

    @jax.jit
    def init(key) -> GPSState:
        init_key, svi_key = jax.random.split(key)
        if jnp.issubdtype(svi_key.dtype, jax.dtypes.prng_key):
            svi_key = jax.random.key_data(svi_key)  # raw uint32 key data: serialisable by any checkpointer
        svi_state = SVIState(svi.optim.init(gps_model.init_param_dict(cfg, init_key)), None, svi_key)
        svi_state = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), svi_state)  # no weak types: a restored
        # checkpoint (strongly typed arrays) must hit the same compiled update
        return GPSState(svi_state=svi_state, last_idx_B=zeros_i, last_s_B=zeros_f, has_last=jnp.asarray(False),
                        hist_idx_WB=jnp.zeros((W, B), jnp.int32), hist_valid_W=jnp.zeros((W,), bool),
                        step=jnp.asarray(0, jnp.int32), neg_elbo=jnp.asarray(jnp.nan, jnp.float32),
                        replay_idx_RB=jnp.zeros((R, B), jnp.int32), replay_c_RB=jnp.zeros((R, B), jnp.float32),
                        replay_n_R=jnp.ones((R,), jnp.float32), successes_N=jnp.zeros((num_prompts,), jnp.float32),
                        failures_N=jnp.zeros((num_prompts,), jnp.float32), calib_pred_C=jnp.zeros((C,), jnp.float32),
                        calib_c_C=jnp.zeros((C,), jnp.float32), calib_n_C=jnp.ones((C,), jnp.float32),
                        calib_count=jnp.asarray(0, jnp.int32))

    def params_of(state):
        return svi.get_params(state.svi_state)

    def _predict_inputs(state, x_PD, key):
        _, prior, decoder = gps_model.apply_networks(params_of(state), nets)
        mu, sigma = gps_model.prior_params(prior, E_ND[state.last_idx_B], state.last_s_B, state.has_last)
        z_MZ = mu + sigma * jax.random.normal(key, (hp["num_pred_samples"],) + mu.shape, mu.dtype)
        return jax.nn.sigmoid(decoder(x_PD, z_MZ)).mean(axis=0)

    @jax.jit
    def predict(state, e_PD, key):
        """Eq. 10 for any prompts, e.g. a test set: raw embeddings f32[P, d] (same embedder as the pool) ->
        mean over M prior samples z ~ p_eta(z | last batch) of sigmoid(dec(e, z)), f32[P]."""
        if e_PD.ndim != 2 or e_PD.shape[1] != embed_dim:
            raise ValueError(f"embeddings must have shape [P, {embed_dim}], got {e_PD.shape}")
        return _predict_inputs(state, (e_PD - mean_D) / std_D, key)

    @jax.jit
    def calibration(state):
        """Fit test_time.LogitCalibration on the first observations kept in the calibration ring."""
        return test_time.fit_logit_calibration(state.calib_pred_C, state.calib_c_C, state.calib_n_C,
                                               jnp.arange(C) < state.calib_count)

    def predictive(state, e_PD, key, num_nodes=16):
        """Calibrated predictive of new prompts' success for test-time allocation: (nodes f32[P, S], weights
        f32[S]) of logit g ~ N(scale * logit(predict) + bias, sd^2), fitted by `calibration(state)`."""
        return test_time.logit_normal_nodes(predict(state, e_PD, key), calibration(state), num_nodes)

    def with_memory(pred_M, ids_M, state):
        """[ours] Posterior mean of Beta(kappa * g, kappa * (1 - g)) after the prompt's decayed counts."""
        s_M, f_M = state.successes_N[ids_M], state.failures_N[ids_M]
        kappa = hp["memory_kappa"]
        return (kappa * pred_M + s_M) / (kappa + s_M + f_M)

    @jax.jit
    def _select(state, candidates_M, key):
        pred_M = _predict_inputs(state, E_ND[candidates_M], key)
        if hp["memory"]:
            pred_M = with_memory(pred_M, candidates_M, state)
        e_MD = E_dist_ND[candidates_M]
        if hp["inter_distance"] == "rms":
            hist_dist_M = acquisition.history_rms_distance(e_MD, E_dist_ND[state.hist_idx_WB], state.hist_valid_W)
        else:
            hist_dist_M = acquisition.history_distance(e_MD, E_dist_ND[state.hist_idx_WB.reshape(-1)],
                                                       jnp.repeat(state.hist_valid_W, B))
        result = acquisition.greedy_max_sum(acquisition.success_utility(pred_M, hp["target"]), e_MD,
                                            hist_dist_M, B, hp["lambda_div"])
        return state, candidates_M[result.selected_B], pred_M

    @jax.jit
    def _update(state, selected_B, successes_B, n):
        counts_B = successes_B.astype(jnp.float32)
        n = jnp.asarray(n, jnp.float32)
        t = state.step
        # Eq. 10 for the batch with the parameters and prior that selected it (predict, then observe)
        pred_B = _predict_inputs(state, E_ND[selected_B], jax.random.fold_in(state.svi_state.rng_key, t))
        first_B = (state.successes_N[selected_B] + state.failures_N[selected_B]) == 0
        slot_B = jnp.where(first_B, (state.calib_count + jnp.cumsum(first_B) - 1) % C, C)  # C: dropped
        decay = hp["memory_decay"]
        successes_N = state.successes_N.at[selected_B].set(decay * state.successes_N[selected_B] + counts_B)
        failures_N = state.failures_N.at[selected_B].set(decay * state.failures_N[selected_B] + n - counts_B)
        if hp["replay"]:
            ring_idx = state.replay_idx_RB.at[t % R].set(selected_B)
            ring_c = state.replay_c_RB.at[t % R].set(counts_B)
            ring_n = state.replay_n_R.at[t % R].set(n)

            def adam_step(g, carry):  # Adam step g: the (previous, current) pair of RL step t - g
                svi_state, loss = carry
                cur, prev = (t - g) % R, (t - g - 1) % R
                new_state, new_loss = svi.update(
                    svi_state, E_ND[ring_idx[prev]], ring_c[prev] / ring_n[prev], t - g >= 1,
                    E_ND[ring_idx[cur]], ring_c[cur], ring_n[cur])
                keep = t - g >= 0  # no such step yet: skip
                svi_state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_state, svi_state)
                return svi_state, jnp.where(g == 0, new_loss, loss)
        else:
            ring_idx, ring_c, ring_n = state.replay_idx_RB, state.replay_c_RB, state.replay_n_R
            args = (E_ND[state.last_idx_B], state.last_s_B, state.has_last, E_ND[selected_B], counts_B, n)

            def adam_step(_, carry):
                return svi.update(carry[0], *args)

        svi_state, loss = jax.lax.fori_loop(0, hp["adam_steps"], adam_step,
                                            (state.svi_state, jnp.asarray(jnp.nan, jnp.float32)))
        slot = t % W
        return state.replace(svi_state=svi_state, last_idx_B=selected_B, last_s_B=counts_B / n,
                             has_last=jnp.asarray(True), hist_idx_WB=state.hist_idx_WB.at[slot].set(selected_B),
                             hist_valid_W=state.hist_valid_W.at[slot].set(True), step=t + 1,
                             neg_elbo=loss.astype(jnp.float32), replay_idx_RB=ring_idx, replay_c_RB=ring_c,
                             replay_n_R=ring_n, successes_N=successes_N, failures_N=failures_N,
                             calib_pred_C=state.calib_pred_C.at[slot_B].set(pred_B, mode="drop"),
                             calib_c_C=state.calib_c_C.at[slot_B].set(counts_B, mode="drop"),
                             calib_n_C=state.calib_n_C.at[slot_B].set(jnp.broadcast_to(n, (B,)), mode="drop"),
                             calib_count=state.calib_count + first_B.sum(dtype=jnp.int32))

    def select(state, candidates_M, key):
        validate_candidates(candidates_M, num_prompts, B)
        return _select(state, jnp.asarray(candidates_M, jnp.int32), key)

    def update(state, selected_B, successes_B, n):
        validate_update(selected_B, successes_B, n, num_prompts)
        if np.shape(selected_B) != (B,):
            raise ValueError(f"selected must have batch_size={B} prompt ids, got shape {np.shape(selected_B)}")
        return _update(state, jnp.asarray(selected_B, jnp.int32), jnp.asarray(successes_B), n)

    return GPS(Selector(init, select, update), predict, predictive, calibration, params_of, nets, cfg, svi, hp,
               E_ND)


def _validate(embeddings_ND, batch_size, n_rollouts, hparams):
    unknown = set(hparams) - set(DEFAULTS) - set(_SIZE_FIELDS)
    if unknown:
        raise TypeError(f"unknown GPS hyperparameters {sorted(unknown)}; valid: "
                        f"{sorted(set(DEFAULTS) | set(_SIZE_FIELDS))}")
    hp = dict(DEFAULTS, **hparams)
    E_ND = np.asarray(embeddings_ND)
    if E_ND.ndim != 2 or not np.issubdtype(E_ND.dtype, np.floating):
        raise ValueError(f"embeddings must be a float array of shape [N, d] (one row per prompt), got "
                         f"{E_ND.dtype}{list(E_ND.shape)}")
    if not np.all(np.isfinite(E_ND)):
        raise ValueError("embeddings contain NaN or inf; clean or re-embed the prompts")
    E_ND = E_ND.astype(np.float32)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= E_ND.shape[0]:
        raise ValueError(f"batch_size must be an int in [1, N={E_ND.shape[0]}], got {batch_size!r}")
    if not isinstance(n_rollouts, int) or n_rollouts < 1:
        raise ValueError(f"n_rollouts must be a positive int, got {n_rollouts!r}")
    for name in ("num_z_samples", "num_pred_samples", "adam_steps", "history_window", "calibration_size"):
        if not isinstance(hp[name], int) or hp[name] < 1:
            raise ValueError(f"{name} must be a positive int, got {hp[name]!r}")
    for name in ("replay", "memory"):
        if not isinstance(hp[name], bool):
            raise ValueError(f"{name} must be True or False, got {hp[name]!r}")
    if not hp["memory_kappa"] > 0 or not 0.0 <= hp["memory_decay"] <= 1.0:
        raise ValueError(f"need memory_kappa > 0 and 0 <= memory_decay <= 1, got {hp['memory_kappa']!r}, "
                         f"{hp['memory_decay']!r}")
    if hp["elbo"] not in ("trace", "mean_field"):
        raise ValueError(f"elbo must be 'trace' or 'mean_field', got {hp['elbo']!r}")
    if hp["inter_distance"] not in ("mean", "rms"):
        raise ValueError(f"inter_distance must be 'mean' or 'rms', got {hp['inter_distance']!r}")
    if hp["distance_dim"] is not None and (not isinstance(hp["distance_dim"], int) or hp["distance_dim"] < 1):
        raise ValueError(f"distance_dim must be None or a positive int, got {hp['distance_dim']!r}")
    if hp["preset"] not in gps_model.PRESETS:
        raise ValueError(f"unknown GPS model preset {hp['preset']!r}; choose one of {sorted(gps_model.PRESETS)}")
    if hp["lambda_div"] < 0:
        raise ValueError(f"lambda_div must be >= 0, got {hp['lambda_div']}")
    return E_ND, hp
