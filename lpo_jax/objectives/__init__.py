"""lpo_jax.objectives: LPO and the group policy-gradient family as pure array functions (no model code).

Trainer interface (identical for every objective; switch by config name):

    obj = get_objective("lpo_fwd", baseline="drgrpo")   # or make_config(name, **config_dict.to_dict())
    cfg = obj.config                                      # frozen, hashable ObjectiveConfig: static under jit

    # once per rollout batch, before mini-batching (groups whole; batch statistics such as
    # REINFORCE++ whitening are taken here over the whole rollout batch)
    targets = prepare(rewards_BK, mask_BKT, cfg)          # Targets pytree: advantages_BK, target_logits_BK,
                                                          # tau_B, zero_var_B (+ .log_w_BK property)
    # per mini-batch: slice logp/old_logp/mask and targets along B with the same group indices
    loss_value, metrics = loss(logp_BKT, old_logp_BKT, mask_BKT, targets_mb, cfg,
                               ref_logp_BKT=None, entropy_BKT=None)
    # differentiable w.r.t. logp_BKT (and entropy_BKT); jit with static_argnames="cfg" or close over cfg.

Shapes: B groups (prompts), K responses each, T response tokens; mask_BKT is 1 on response tokens.
Every loss returns metrics kl_target_policy (KL(w*||P_theta)), sum_abs_c, clip_frac, zero_var_frac,
adv_abs_mean, response_len, approx_kl_old, tau_mean, loss, policy_loss, and kl_ref / entropy when the
reference log-probs / entropies are passed. Means over prompts count only groups with a valid token, so a
static-shape batch can drop groups (DAPO dynamic sampling) by zeroing their mask. The loss is normalised within
the mini-batch it is given; when accumulating micro-batches, weight each micro-batch loss by its number of valid
groups (token-mean: valid tokens) to recover the mini-batch loss.

Objectives (config.PRESETS): grpo, drgrpo, rloo, maxrl, dapo, gspo, cispo, rpp (REINFORCE++-baseline),
lpo_fwd, lpo_rev, lpo_js, lpo_hellinger, lpo_chi2, lpo_point. LPO's temperature comes from `baseline`
(grpo | drgrpo | rloo | maxrl | rpp_baseline | constant), the paired PG method's implicit temperature.

Decisions where the spec (papers/lpo.md §9) is open, all options of ObjectiveConfig:
  1. Sequence log-prob aggregation `seq_logprob_agg="mean"` (our Eq. 3 reading; "sum" = TPO).
  2. LPO coefficients from the unclipped s (`lpo_coef_from`), symmetric-hard token clipping (`lpo_clip`,
     with a PPO-style "sign" option and "none").
  3. Gradient clipping / warmup belong to the trainer (verl default: clip 1.0, no warmup).
  4. GRPO std ddof=1 (verl) by default, `grpo_std_ddof=0` for the paper's binary sqrt(mu(1-mu)).
  5. REINFORCE++-baseline whitening token-weighted (verl) by default, `rpp_whiten="sequence"` option.
  6. DAPO dynamic sampling and overlong shaping are separate pipeline functions (dapo.py).
"""
from lpo_jax.objectives.advantages import (ADVANTAGE_FNS, Targets, compute_advantages, get_advantage_fn,
                                           group_temperature, prepare)
from lpo_jax.objectives.aggregation import aggregate_loss, seq_aggregate
from lpo_jax.objectives.config import PRESETS, ObjectiveConfig, make_config
from lpo_jax.objectives.dapo import nonzero_variance_groups, overlong_penalty
from lpo_jax.objectives.lpo import (INVALID_LOGIT, item_valid, lpo_coefficients, lpo_divergence, lpo_log_target,
                                   lpo_policy_loss, prepare_masked)
from lpo_jax.objectives.objective import loss
from lpo_jax.objectives.policy_losses import (cispo_token_loss, gspo_token_loss, kl_to_reference,
                                              pg_policy_loss, ppo_clip_token_loss)
from lpo_jax.objectives.registry import OBJECTIVE_NAMES, Objective, get_objective

__all__ = [
    "ADVANTAGE_FNS", "INVALID_LOGIT", "OBJECTIVE_NAMES", "PRESETS", "Objective", "ObjectiveConfig", "Targets",
    "aggregate_loss", "cispo_token_loss", "compute_advantages", "get_advantage_fn", "get_objective",
    "group_temperature", "gspo_token_loss", "item_valid", "kl_to_reference", "loss", "lpo_coefficients", "lpo_divergence",
    "lpo_log_target", "lpo_policy_loss", "make_config", "nonzero_variance_groups", "overlong_penalty",
    "pg_policy_loss", "ppo_clip_token_loss", "prepare", "prepare_masked", "seq_aggregate",
]
