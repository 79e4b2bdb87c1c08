"""DPS: a 3-state HMM per prompt (unsolved / partial / solved), filtered online (spec §5).

Per prompt: Dirichlet counts A[i, j] over transitions j (current) -> i (next); the mean transition matrix
P = A / A.sum(0) (the mean of `numpyro.distributions.Dirichlet` per column) is column-stochastic. Each
update step, for a prompt observed with emission log-likelihood L (one-hot of the state read off c under
the default deterministic emission; Binomial(n, r_state) under `emission="binomial"`):
    xi[i, j] ∝ L[i] P_old[i, j] belief_prev[j]        (= p(z_{t-1}=j, z_t=i | data), normalised)
    A <- decay * A + (1 - decay) * A0 + xi,   belief_prev <- sum_j xi[:, j],   belief_pred <- P(A) belief_prev
Unobserved (but seen) prompts: decay only, belief_prev <- belief_pred, belief_pred <- P(A) belief_pred.
Acquisition: top-B by belief_pred[partial] (+ entropy_weight * H(belief_pred)), exact ties broken at random.

Scaling to millions of prompts (spec: negligible next to a rollout):
- counts are stored lazily as of each prompt's last observation: A_t = A0 + decay^(t - t_last) (A_last - A0)
  equals applying the per-step decay t - t_last times, so unobserved prompts never rewrite their counts;
- every step still propagates all seen prompts' beliefs (one 3x3 mat-vec per prompt with P built on the
  fly, written as unrolled [N]-vector arithmetic that XLA fuses into one pass); only the B observed rows
  run the filter update (numpyro Dirichlet/Binomial/Categorical) and are scattered back;
- when P(A0) leaves the initial belief unchanged (uniform prior, uniform belief: the paper's setting),
  propagating never-seen prompts is a no-op, so candidates are not marked "seen" (saves an [M] scatter).
Layout: arrays are [3, 3, N] / [3, N] (prompt axis minor) so the per-prompt arithmetic vectorises.

Options: `prior` in uniform/progress/stability/local (times `prior_strength`); `shared_transitions=True`
pools one count matrix over all prompts (a tighter estimate of a common P; the recovery test's variant).
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from flax import struct

from lpo_jax.selection import _random
from lpo_jax.selection.base import Selector
from lpo_jax.selection.validation import (check_common_hparams, check_decay, validate_candidates,
                                          validate_update)

UNSOLVED, PARTIAL, SOLVED = 0, 1, 2
PRIORS = {  # A0[next, current]
    "uniform": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
    "progress": [[1.0, 0.5, 0.5], [1.0, 1.0, 0.5], [1.0, 1.0, 1.0]],
    "stability": [[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]],
    "local": [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]],
}
DETERMINISTIC_RATES = (0.0, 0.5, 1.0)  # success-rate proxy per state for predicted_success


@struct.dataclass
class DPSState:
    counts_IJN: jnp.ndarray  # f32[3, 3, N] (or [3, 3, 1] shared): Dirichlet counts as of last_update_N
    last_update_N: jnp.ndarray  # i32[N] (or [1]): update step at which counts_IJN was written
    belief_prev_IN: jnp.ndarray  # f32[3, N]: filtered belief of the latest step, p(z_t | data_{<=t}); pi0 at t=0
    belief_pred_IN: jnp.ndarray  # f32[3, N]: predictive belief for the next step, p(z_{t+1} | data_{<=t})
    seen_N: jnp.ndarray  # bool[N]: ever a candidate (propagated from then on)
    step: jnp.ndarray  # i32: number of update calls so far


def prior_counts(prior="uniform", strength: float = 1.0) -> np.ndarray:
    """A0 as f32[3, 3] from a prior name or an explicit 3x3 array (columns must have positive sums)."""
    if isinstance(prior, str) and prior not in PRIORS:
        raise ValueError(f"unknown DPS prior {prior!r}; choose from {sorted(PRIORS)} or pass a 3x3 array.")
    a0 = np.asarray(PRIORS[prior] if isinstance(prior, str) else prior, np.float32) * strength
    if a0.shape != (3, 3) or (a0 < 0).any() or (a0.sum(0) <= 0).any():
        raise ValueError(f"DPS prior counts must be a non-negative 3x3 array with positive column sums, got {a0}.")
    return a0


def transition_matrix(counts_IJ):
    """Mean transition matrix of per-column Dirichlet posteriors, P[i, j] = p(next=i | current=j).

    Accepts [3, 3, ...] counts; columns j are independent `numpyro.distributions.Dirichlet`s.
    """
    conc = jnp.moveaxis(counts_IJ, 0, -1)  # [3(cur), ..., 3(next)]: Dirichlet event axis last
    # validate_args=False: the 'local' prior has structural zeros (impossible transitions), outside the
    # Dirichlet's open support but with a well-defined mean.
    return jnp.moveaxis(dist.Dirichlet(conc, validate_args=False).mean, -1, 0)


def decayed_counts(counts_last, a0, decay, steps_since):
    """Counts after `steps_since` decay-only steps: A0 + decay^h (A - A0) (h broadcasts over the last axis)."""
    return a0 + _decay_power(decay, steps_since) * (counts_last - a0)


def _decay_power(decay, steps):
    """decay ** steps as exp(steps * log(decay)): XLA CPU's pow is ~5x slower than exp."""
    return jnp.exp(steps.astype(jnp.float32) * np.float32(np.log(decay)))


def state_of(successes, n):
    """0 unsolved (c = 0), 1 partial (0 < c < n), 2 solved (c = n)."""
    return jnp.where(successes <= 0, UNSOLVED, jnp.where(successes >= n, SOLVED, PARTIAL))


def emission_log_lik(successes_B, n, emission: str, rates):
    """log p(c | state) as f32[3, B]: log one-hot under 'deterministic', Binomial(n, rates) under 'binomial'."""
    if emission == "deterministic":
        onehot = jax.nn.one_hot(state_of(successes_B, n), 3, axis=0)
        return jnp.where(onehot > 0, 0.0, -jnp.inf)
    probs = jnp.asarray(rates, jnp.float32)[:, None]
    return dist.Binomial(total_count=n, probs=probs).log_prob(successes_B[None, :].astype(jnp.float32))


def observe(counts_old_IJB, belief_prev_IB, log_lik_IB, a0_IJ, decay):
    """Filter update for observed prompts: (new counts [3,3,B], filtered belief [3,B], predictive [3,B]).

    `counts_old` are the counts at the previous step (already decayed to it). If the observation has zero
    probability under the current P (possible with the 'local' prior's zero counts), P is dropped from the
    joint for that prompt, i.e. xi ∝ L[i] belief_prev[j].
    """
    log_p = jnp.log(transition_matrix(counts_old_IJB))
    log_prev = jnp.log(belief_prev_IB)[None, :, :]
    log_lik = log_lik_IB[:, None, :]
    joint = log_lik + log_p + log_prev
    norm = jax.scipy.special.logsumexp(joint, axis=(0, 1))
    fallback = log_lik + log_prev
    joint = jnp.where(jnp.isfinite(norm), joint, fallback)
    norm = jnp.where(jnp.isfinite(norm), norm, jax.scipy.special.logsumexp(fallback, axis=(0, 1)))
    xi = jnp.exp(joint - norm)
    counts_new = a0_IJ[:, :, None] + decay * (counts_old_IJB - a0_IJ[:, :, None]) + xi
    post = xi.sum(1)
    return counts_new, post, _matvec(transition_matrix(counts_new), post)


def _matvec(p_IJN, v_JN):
    out = [p_IJN[i, 0] * v_JN[0] + p_IJN[i, 1] * v_JN[1] + p_IJN[i, 2] * v_JN[2] for i in range(3)]
    total = out[0] + out[1] + out[2]
    return jnp.stack([o / total for o in out])


def propagate(counts_last_IJN, last_update_N, belief_IN, a0_IJ, decay, new_step):
    """belief <- P(A at new_step) belief for every prompt, P built on the fly (no [3,3,N] written)."""
    w = _decay_power(decay, new_step - last_update_N)
    a = [[a0_IJ[i, j] + w * (counts_last_IJN[i, j] - a0_IJ[i, j]) for j in range(3)] for i in range(3)]
    inv_col = [1.0 / (a[0][j] + a[1][j] + a[2][j]) for j in range(3)]
    scaled = [belief_IN[j] * inv_col[j] for j in range(3)]
    out = [a[i][0] * scaled[0] + a[i][1] * scaled[1] + a[i][2] * scaled[2] for i in range(3)]
    total = out[0] + out[1] + out[2]
    return jnp.stack([o / total for o in out])


def belief_entropy(belief_IM):
    """Entropy of Categorical beliefs, [3, M] -> [M]."""
    return dist.Categorical(probs=belief_IM.T).entropy()


def make_dps(num_prompts: int, batch_size: int, *, decay: float = 0.7, prior="uniform", prior_strength: float = 1.0,
             initial_belief=(1 / 3, 1 / 3, 1 / 3), entropy_weight: float = 0.0, emission: str = "deterministic",
             emission_rates=(0.05, 0.5, 0.95), shared_transitions: bool = False) -> Selector:
    """DPS selector (defaults: the paper's A0 = 1, uniform initial belief, top-k, decay 0.7 for large pools).

    emission="binomial": the state stays hidden even on observed steps; c ~ Binomial(n, emission_rates[z])
    (states read as hard / medium / easy); predicted_success = sum_z belief[z] * rate[z]. Under the default
    deterministic emission predicted_success = p(solved) + 0.5 p(partial) (the spec's proxy).
    """
    check_common_hparams(num_prompts, batch_size)
    check_decay(decay)
    if emission not in ("deterministic", "binomial"):
        raise ValueError(f"emission must be 'deterministic' or 'binomial', got {emission!r}.")
    rates = np.asarray(emission_rates if emission == "binomial" else DETERMINISTIC_RATES, np.float32)
    if rates.shape != (3,) or (rates <= 0).any() and emission == "binomial" or (rates > 1).any():
        raise ValueError(f"emission_rates must be 3 success rates in (0, 1], got {emission_rates}.")
    pi0 = np.asarray(initial_belief, np.float32)
    if pi0.shape != (3,) or (pi0 < 0).any() or not np.isclose(pi0.sum(), 1.0, atol=1e-5):
        raise ValueError(f"initial_belief must be 3 probabilities summing to 1, got {initial_belief}.")
    a0 = prior_counts(prior, prior_strength)
    p0 = a0 / a0.sum(0, keepdims=True)
    track_seen = not np.allclose(p0 @ pi0, pi0, atol=1e-7)  # else propagating unseen prompts is a no-op
    B, N = int(batch_size), int(num_prompts)
    n_counts = 1 if shared_transitions else N
    a0_j = jnp.asarray(a0)

    def init(key):
        del key
        # z_0 ~ pi0 is the state before the first update; the prediction for step 1 is P(A0) pi0.
        return DPSState(counts_IJN=jnp.tile(a0_j[:, :, None], (1, 1, n_counts)),
                        last_update_N=jnp.zeros((n_counts,), jnp.int32),
                        belief_prev_IN=jnp.tile(jnp.asarray(pi0)[:, None], (1, N)),
                        belief_pred_IN=jnp.tile(jnp.asarray(p0 @ pi0, jnp.float32)[:, None], (1, N)),
                        seen_N=jnp.zeros((N,), bool), step=jnp.int32(0))

    def predicted_success(belief_IM):
        return sum(float(rates[i]) * belief_IM[i] for i in range(3) if rates[i] != 0.0)

    def select(state, candidates, key):
        validate_candidates(candidates, N, B)
        belief_IM = state.belief_pred_IN[:, candidates]
        score = belief_IM[PARTIAL]
        if entropy_weight:
            score = score + entropy_weight * belief_entropy(belief_IM)
        pos = _random.top_k_random_ties(score, B, _random.key_to_seed(key))
        seen = state.seen_N.at[candidates].set(True) if track_seen else state.seen_N
        return state.replace(seen_N=seen), candidates[pos], predicted_success(belief_IM)

    def update(state, selected, successes, n):
        validate_update(selected, successes, n, N)
        new_step = state.step + 1
        seen = state.seen_N.at[selected].set(True) if track_seen else state.seen_N
        # Observed rows: filter update on counts decayed to the previous step.
        rows = jnp.zeros((1,), jnp.int32) if shared_transitions else selected
        counts_old = decayed_counts(state.counts_IJN[:, :, rows], a0_j[:, :, None], decay,
                                    state.step - state.last_update_N[rows])
        log_lik = emission_log_lik(successes, n, emission, rates)
        counts_obs, post, pred_obs = observe(counts_old, state.belief_prev_IN[:, selected], log_lik, a0_j, decay)
        if shared_transitions:  # pool the soft counts of all observed rows into the one matrix
            decayed_only = a0_j[:, :, None] + decay * (counts_old - a0_j[:, :, None])
            counts = decayed_only + (counts_obs - decayed_only).sum(-1, keepdims=True)
            last = jnp.full((1,), new_step, jnp.int32)
            pred_obs = _matvec(transition_matrix(counts), post)
        else:
            counts = state.counts_IJN.at[:, :, selected].set(counts_obs)
            last = state.last_update_N.at[selected].set(new_step)
        # Every seen prompt as if unobserved (decay implicit in the lazy counts), then the observed rows.
        pred_all = propagate(counts, last, state.belief_pred_IN, a0_j, decay, new_step)
        prev_all = state.belief_pred_IN
        if track_seen:
            pred_all = jnp.where(seen[None, :], pred_all, state.belief_pred_IN)
            prev_all = jnp.where(seen[None, :], prev_all, state.belief_prev_IN)
        return DPSState(counts_IJN=counts, last_update_N=last,
                        belief_prev_IN=prev_all.at[:, selected].set(post),
                        belief_pred_IN=pred_all.at[:, selected].set(pred_obs), seen_N=seen, step=new_step)

    return Selector(init=init, select=select, update=update)
