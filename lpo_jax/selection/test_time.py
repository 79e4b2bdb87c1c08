"""GPS test-time compute allocation (spec §6, Eq. 22-23): samples per test prompt from predicted difficulty.

Given predicted success probabilities g_P for P test prompts and a fixed sample budget, choose integer
counts n_P (sum n_P = budget exactly) maximising the expected number of solved prompts

    sum_tau 1 - (1 - g_tau)^{n_tau}

greedily: each of the budget's samples goes to the prompt with the largest marginal gain
g_tau (1 - g_tau)^{n_tau} (ties to the lowest index). The gains of one prompt shrink geometrically, so the
objective is separable and concave and greedy allocation is optimal for it. This favours "challenging but
solvable" prompts: a prompt at g = 0.99 gets its first sample and little more, one at g = 0.3 keeps
earning samples, one at g = 0 gets samples only once every other gain has decayed below ~0.

The spec's binned form (bin by g, samples per bin) is the special case of constant g within a bin; this
per-prompt greedy needs no bin edges. Optional min/max samples per prompt.
"""
import jax
import jax.numpy as jnp


def expected_solved(pred_P, samples_P):
    """sum_tau 1 - (1 - g_tau)^{n_tau}: expected prompts with at least one correct sample."""
    return jnp.sum(1.0 - (1.0 - pred_P) ** samples_P)


def allocate_test_samples(pred_P, budget: int, *, min_per_prompt: int = 0, max_per_prompt=None):
    """Integer samples per prompt i32[P] with sum == budget (greedy marginal gain; module docstring).

    pred_P: predicted success probabilities in [0, 1] (e.g. GPS's predict on the test prompts' embeddings).
    budget: total samples (static int). min_per_prompt: samples every prompt gets first. max_per_prompt:
    optional cap per prompt (None = no cap). Jittable with budget, min and max static.
    """
    pred_P = jnp.asarray(pred_P)
    if pred_P.ndim != 1 or not jnp.issubdtype(pred_P.dtype, jnp.floating):
        raise ValueError(f"pred must be a 1-D float array of success probabilities, got "
                         f"{pred_P.dtype}{list(pred_P.shape)}")
    num_prompts = pred_P.shape[0]
    if not isinstance(budget, int) or not isinstance(min_per_prompt, int) or min_per_prompt < 0:
        raise ValueError(f"budget and min_per_prompt must be non-negative ints, got {budget!r}, {min_per_prompt!r}")
    if budget < min_per_prompt * num_prompts:
        raise ValueError(f"budget={budget} is below min_per_prompt={min_per_prompt} x {num_prompts} prompts")
    if max_per_prompt is not None:
        if not isinstance(max_per_prompt, int) or max_per_prompt < max(min_per_prompt, 1):
            raise ValueError(f"max_per_prompt must be an int >= max(min_per_prompt, 1), got {max_per_prompt!r}")
        if budget > max_per_prompt * num_prompts:
            raise ValueError(f"budget={budget} exceeds max_per_prompt={max_per_prompt} x {num_prompts} prompts")
    try:
        finite = bool(jnp.all(jnp.isfinite(pred_P)))
    except jax.errors.TracerBoolConversionError:  # under jit: cannot check values
        finite = True
    if not finite:
        raise ValueError("pred contains NaN or inf; predicted success probabilities must be finite")
    g_P = jnp.clip(pred_P.astype(jnp.float32), 0.0, 1.0)
    samples_P = jnp.full((num_prompts,), min_per_prompt, jnp.int32)
    gain_P = g_P * (1.0 - g_P) ** min_per_prompt
    cap = jnp.iinfo(jnp.int32).max if max_per_prompt is None else max_per_prompt

    def give_one(_, carry):
        samples_P, gain_P = carry
        open_P = samples_P < cap
        j = jnp.argmax(jnp.where(open_P, gain_P, -1.0))  # gains are >= 0, so an open prompt always wins
        return samples_P.at[j].add(1), gain_P.at[j].multiply(1.0 - g_P[j])

    samples_P, _ = jax.lax.fori_loop(0, budget - min_per_prompt * num_prompts, give_one, (samples_P, gain_P))
    return samples_P
