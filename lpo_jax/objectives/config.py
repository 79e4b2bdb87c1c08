"""`ObjectiveConfig`: one frozen, hashable config for every objective (a static argument under jax.jit).

Per-name defaults live in `PRESETS`; `make_config(name, **overrides)` applies them and validates. Every
field is a plain Python scalar/str, so an ml_collections ConfigDict converts with
`make_config(name, **cfg_dict.to_dict())`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

POLICY_LOSSES = ("ppo", "gspo", "cispo", "lpo")
BASELINES = ("grpo", "drgrpo", "rloo", "maxrl", "rpp_baseline", "constant")
DIVERGENCES = ("fwd", "rev", "js", "hellinger", "chi2", "point")
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")
SEQ_LOGPROB_AGGS = ("mean", "sum")
RPP_WHITEN = ("token", "sequence")
LPO_CLIPS = ("hard", "sign", "none")
LPO_COEF_FROM = ("unclipped", "clipped")
# Group modes whose advantage/temperature is undefined or identically zero with one response per prompt.
BASELINES_NEEDING_GROUPS = ("grpo", "drgrpo", "rloo", "maxrl")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Hyperparameters of a group policy-gradient or LPO objective (see `lpo_jax.objectives` docs).

    policy_loss: "ppo" (token PPO-clip: GRPO/Dr.GRPO/RLOO/MaxRL/DAPO/REINFORCE++), "gspo" (sequence ratio),
        "cispo" (stop-gradient clipped IS weight) or "lpo" (listwise target projection).
    baseline: advantage / LPO temperature mode, spec §2 table: A = (R - mu_G - shift)/tau and
        target logits phi = (R - mu_G)/tau. LPO pairs its tau with the baseline it is compared against.
    divergence: LPO projection divergence D(w*, P): fwd = KL(w*||P), rev = KL(P||w*), js, hellinger
        (squared, 1 - sum sqrt(w P)), chi2 (Pearson, sum w^2/P - 1), point (pointwise ablation, c = -w*).
    loss_agg: verl agg_loss mode for token losses (PG terms, KL and entropy terms). "seq-mean" means
        sum over the group / (K * number of groups with any valid token) [ours: fully masked groups, e.g.
        padding after DAPO filtering in a static-shape batch, do not dilute the mean].
    clip_eps_low / clip_eps_high: ratio clip [1-lo, 1+hi] (DAPO clip-higher: 0.2/0.28). LPO clips the token
        log-ratio to [log(1-lo), log(1+hi)].
    dual_clip_c: dual-clip constant (> 1) bounding -A*r for A < 0 (PPO/GRPO/DAPO/RLOO...); None disables.
    max_response_len: L_max of "seq-mean-token-sum-norm" (Dr.GRPO); None uses the mask's T.
    kl_coef / kl_estimator: reference-KL penalty (beta; spec uses 0). k1 = log(pi/ref), k2 = 0.5 k1^2,
        k3 = ref/pi - log(ref/pi) - 1, low_var_kl = k3 with verl's clamps.
    entropy_coef: entropy bonus gamma (loss -= gamma * agg(entropy)).
    grpo_std_ddof: 1 (default; verl's unbiased std) or 0 (the paper's binary sqrt(mu(1-mu))).
    std_eps: added to every std/mean temperature (tau = sigma + eps), so zero-variance groups give A = 0.
    rpp_whiten: REINFORCE++-baseline batch whitening weights: "token" (default; verl's masked_whiten,
        each sequence weighted by its length) or "sequence" (each sequence once). Both use ddof=1.
    tau0: temperature of the "constant" mode.
    k1_baseline: K = 1 only: baseline b of LPO's virtual simplex {R, b}; None = batch mean reward.
    seq_logprob_agg: "mean" (default; our Eq. 3 reading, matches GRPO's seq-mean-token-mean in Prop. 1)
        or "sum" (TPO; matches token-sum PG). Sets the scale of the sequence log-ratio s.
    lpo_clip: "hard" (default; symmetric: tokens outside the band get zero gradient whatever sign(c)),
        "sign" (PPO-style: only the side c pushes towards is cut) or "none" (exact gradient).
    lpo_coef_from: "unclipped" (default; c from the unclipped s) or "clipped".
    log_ratio_clamp: |log r| clamp before exp() in PG ratios (verl uses 20); gradient is zero beyond it.
    """

    policy_loss: str = "ppo"
    baseline: str = "grpo"
    divergence: str = "fwd"
    loss_agg: str = "seq-mean-token-mean"
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip_c: Optional[float] = None
    max_response_len: Optional[int] = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    grpo_std_ddof: int = 1
    std_eps: float = 1e-6
    rpp_whiten: str = "token"
    tau0: float = 1.0
    k1_baseline: Optional[float] = None
    seq_logprob_agg: str = "mean"
    lpo_clip: str = "hard"
    lpo_coef_from: str = "unclipped"
    log_ratio_clamp: float = 20.0

    def __post_init__(self):
        choices = dict(policy_loss=POLICY_LOSSES, baseline=BASELINES, divergence=DIVERGENCES,
                       loss_agg=LOSS_AGGS, kl_estimator=KL_ESTIMATORS, seq_logprob_agg=SEQ_LOGPROB_AGGS,
                       rpp_whiten=RPP_WHITEN, lpo_clip=LPO_CLIPS, lpo_coef_from=LPO_COEF_FROM)
        for field, allowed in choices.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"ObjectiveConfig.{field}={value!r} is not one of {allowed}.")
        if not (0.0 <= self.clip_eps_low <= 1.0) or self.clip_eps_high < 0.0:
            raise ValueError(f"clip_eps_low must be in [0, 1] and clip_eps_high >= 0, got "
                             f"{self.clip_eps_low}, {self.clip_eps_high}.")
        if self.dual_clip_c is not None and self.dual_clip_c <= 1.0:
            raise ValueError(f"dual_clip_c must be > 1 (typically 3.0) or None, got {self.dual_clip_c}.")
        if self.max_response_len is not None and self.max_response_len < 1:
            raise ValueError(f"max_response_len must be a positive int or None, got {self.max_response_len}.")
        if self.grpo_std_ddof not in (0, 1):
            raise ValueError(f"grpo_std_ddof must be 0 or 1, got {self.grpo_std_ddof}.")
        if self.std_eps <= 0.0 or self.tau0 <= 0.0 or self.log_ratio_clamp <= 0.0:
            raise ValueError("std_eps, tau0 and log_ratio_clamp must be > 0, got "
                             f"{self.std_eps}, {self.tau0}, {self.log_ratio_clamp}.")
        if self.kl_coef < 0.0 or self.entropy_coef < 0.0:
            raise ValueError(f"kl_coef and entropy_coef must be >= 0, got {self.kl_coef}, {self.entropy_coef}.")


def _lpo(divergence: str) -> dict:
    return dict(policy_loss="lpo", baseline="grpo", divergence=divergence)


# Per-objective defaults (spec §3). [ours] where the source gives no number: rloo/maxrl use seq-mean-token-mean
# (the aggregation that LPO with mean sequence log-probs matches exactly, Prop. 1); CISPO's eps_low = 1 disables
# the lower clip (MiniMax tunes only eps_high) and eps_high = 0.28 follows DAPO.
PRESETS = {
    "grpo": dict(policy_loss="ppo", baseline="grpo", loss_agg="seq-mean-token-mean"),
    "drgrpo": dict(policy_loss="ppo", baseline="drgrpo", loss_agg="seq-mean-token-sum-norm"),
    "rloo": dict(policy_loss="ppo", baseline="rloo", loss_agg="seq-mean-token-mean"),
    "maxrl": dict(policy_loss="ppo", baseline="maxrl", loss_agg="seq-mean-token-mean"),
    "dapo": dict(policy_loss="ppo", baseline="grpo", loss_agg="token-mean", clip_eps_high=0.28),
    "gspo": dict(policy_loss="gspo", baseline="grpo", loss_agg="seq-mean-token-mean",
                 clip_eps_low=3e-4, clip_eps_high=4e-4),
    "cispo": dict(policy_loss="cispo", baseline="grpo", loss_agg="token-mean",
                  clip_eps_low=1.0, clip_eps_high=0.28),
    "rpp": dict(policy_loss="ppo", baseline="rpp_baseline", loss_agg="token-mean"),
    "lpo_fwd": _lpo("fwd"),
    "lpo_rev": _lpo("rev"),
    "lpo_js": _lpo("js"),
    "lpo_hellinger": _lpo("hellinger"),
    "lpo_chi2": _lpo("chi2"),
    "lpo_point": _lpo("point"),
}

_FIELDS = tuple(f.name for f in dataclasses.fields(ObjectiveConfig))


def make_config(name: str, **overrides) -> ObjectiveConfig:
    """Config of objective `name` (a key of PRESETS) with `overrides` applied; validated."""
    if name not in PRESETS:
        raise ValueError(f"Unknown objective {name!r}; choose one of {sorted(PRESETS)}.")
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ValueError(f"Unknown ObjectiveConfig field(s) {unknown}; valid fields are {list(_FIELDS)}.")
    return ObjectiveConfig(**{**PRESETS[name], **overrides})
