"""DPS over a whole reward history: log-space forward filtering under `lax.scan`, and the NumPyro model.

- `filter_history`: the DPS online filter (same update as the selector: Dirichlet soft counts with decay,
  Categorical beliefs) run over one prompt's history of length T in log space; vmap it over prompts.
  Works for both emissions; with `emission="binomial"` the state stays hidden on observed steps too.
- `dps_hmm_model`: the generative model behind DPS as a NumPyro program: T[:, j] ~ Dirichlet(A0[:, j]),
  z_0 ~ Categorical(pi0), z_t ~ Categorical(T[:, z_{t-1}]), observations by the emission. The discrete
  path is summed out exactly by the forward algorithm (`hmm_log_marginal`), so NUTS runs on T alone and
  gives exact Bayesian answers (decay = 1) to check the online filter against.
"""
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import lax
from jax.scipy.special import logsumexp

from lpo_jax.selection.dps import emission_log_lik, transition_matrix


def filter_history(successes_T, observed_T, n, *, a0, decay=1.0, initial_belief=(1 / 3, 1 / 3, 1 / 3),
                   emission="deterministic", rates=(0.05, 0.5, 0.95)):
    """Run the DPS filter over one prompt's history; the prompt counts as seen from step 1.

    successes_T: i32[T]; observed_T: bool[T]. Returns dict with
      pred_T3: p(z_{t+1} | data_{<=t}) after each step, filt_T3: p(z_t | data_{<=t}), counts_T33: A after each step.
    """
    a0 = jnp.asarray(a0, jnp.float32)
    log_pi0 = jnp.log(jnp.asarray(initial_belief, jnp.float32))
    log_lik_T3 = emission_log_lik(successes_T, n, emission, rates).T

    def step(carry, inp):
        counts, log_filt = carry
        observed, log_lik = inp
        log_p = jnp.log(transition_matrix(counts))  # P of the previous step's counts
        joint = log_lik[:, None] + log_p + log_filt[None, :]
        norm = logsumexp(joint)
        fallback = log_lik[:, None] + log_filt[None, :]
        joint = jnp.where(jnp.isfinite(norm), joint - norm, fallback - logsumexp(fallback))
        xi = jnp.where(observed, jnp.exp(joint), 0.0)
        log_pred_prev = logsumexp(log_p + log_filt[None, :], axis=1)  # p(z_t | data_{<t})
        new_counts = a0 + decay * (counts - a0) + xi
        log_filt_new = jnp.where(observed, logsumexp(joint, axis=1), log_pred_prev)
        log_pred = logsumexp(jnp.log(transition_matrix(new_counts)) + log_filt_new[None, :], axis=1)
        return (new_counts, log_filt_new), (jnp.exp(log_pred), jnp.exp(log_filt_new), new_counts)

    _, (pred, filt, counts) = lax.scan(step, (a0, log_pi0), (observed_T, log_lik_T3))
    return {"pred_T3": pred, "filt_T3": filt, "counts_T33": counts}


def hmm_log_marginal(log_p_IJ, log_pi0_J, log_lik_T3, observed_T):
    """(log p(observations | T), filtered log belief of the last step), by the forward algorithm."""

    def step(log_alpha, inp):
        observed, log_lik = inp
        log_alpha = logsumexp(log_p_IJ + log_alpha[None, :], axis=1)
        return log_alpha + jnp.where(observed, log_lik, 0.0), None

    log_alpha, _ = lax.scan(step, log_pi0_J, (observed_T, log_lik_T3))
    total = logsumexp(log_alpha)
    return total, log_alpha - total


def dps_hmm_model(successes_T, observed_T, n, a0, initial_belief=(1 / 3, 1 / 3, 1 / 3),
                  emission="deterministic", rates=(0.05, 0.5, 0.95)):
    """NumPyro model of one prompt's history; records `next_state_probs` = p(z_{T+1} | T, data)."""
    a0 = jnp.asarray(a0, jnp.float32)
    cols = numpyro.sample("T_cols", dist.Dirichlet(a0.T))  # [3(current), 3(next)]
    log_p = jnp.log(cols.T)
    log_lik = emission_log_lik(successes_T, n, emission, rates).T
    total, log_filt = hmm_log_marginal(log_p, jnp.log(jnp.asarray(initial_belief, jnp.float32)), log_lik, observed_T)
    numpyro.factor("observations", total)
    numpyro.deterministic("next_state_probs", cols.T @ jnp.exp(log_filt))


def posterior_predictive_nuts(key, successes_T, observed_T, n, a0, *, num_warmup=500, num_samples=2000, **model_kw):
    """Exact-model p(z_{T+1} | data) by NUTS over T (the discrete path marginalised); mean over samples."""
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(dps_hmm_model), num_warmup=num_warmup, num_samples=num_samples,
                              progress_bar=False)
    mcmc.run(key, successes_T, observed_T, n, a0, **model_kw)
    samples = mcmc.get_samples()
    return samples["next_state_probs"].mean(0), samples["T_cols"]
