"""DAPO dynamic sampling (DS) as selection + filter that a trainer drives.

DS over-generates: propose `B` prompts (dataloader order = the Uniform selector), roll out `n` each, keep
the groups with mixed rewards (0 < c < n; band variant filter_min <= c/n <= filter_max), repeat until
>= B groups are kept (then truncate to B) or `max_num_gen_batches` generation rounds are spent, and train
on what was kept. Every rollout generated counts, including the discarded ones.

Two ways to drive it, sharing the same pure functions:
- a training loop with a host-side rollout:
      rnd = ds_round_init(B)
      while not ds_round_done(rnd, cfg):
          state, ids, _ = selector.select(state, candidates, key_r)
          successes = rollout_and_reward(ids)           # LLM sampling, on device/host
          state = selector.update(state, ids, successes, n)
          rnd = ds_round_add(rnd, ids, successes, n, cfg)
      train on rnd.kept_ids[ds_train_mask(rnd)]; log rnd.num_rollouts
- a pure rollout function (simulator): `dynamic_sampling_step` runs the same loop in `lax.while_loop`.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from lpo_jax.selection.base import Selector
from lpo_jax.selection.metrics import mixed_mask
from lpo_jax.selection.uniform import make_uniform


@dataclasses.dataclass(frozen=True)
class DynamicSamplingConfig:
    """DAPO `filter_groups` settings. Band filter when filter_min/filter_max are set (inclusive)."""

    max_num_gen_batches: int = 4
    filter_min: Optional[float] = None
    filter_max: Optional[float] = None

    def __post_init__(self):
        if int(self.max_num_gen_batches) < 1:
            raise ValueError(f"max_num_gen_batches must be >= 1, got {self.max_num_gen_batches}.")
        lo = 0.0 if self.filter_min is None else self.filter_min
        hi = 1.0 if self.filter_max is None else self.filter_max
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"need 0 <= filter_min <= filter_max <= 1, got {self.filter_min}, {self.filter_max}.")


@struct.dataclass
class DSRound:
    kept_ids: jnp.ndarray  # i32[B]; valid where ds_train_mask
    kept_successes: jnp.ndarray  # i32[B]
    num_kept: jnp.ndarray  # i32, <= B
    num_gen_batches: jnp.ndarray  # i32: generation rounds spent
    num_rollouts: jnp.ndarray  # i32: every rollout generated, kept or discarded
    num_proposed: jnp.ndarray  # i32: prompts rolled out


def filter_mixed(successes, n, filter_min=None, filter_max=None):
    """bool mask of groups DS keeps: mixed rewards (0 < c < n), or the band [filter_min, filter_max]."""
    return mixed_mask(successes, n, filter_min, filter_max)


def ds_round_init(batch_size: int) -> DSRound:
    z = jnp.int32(0)
    return DSRound(kept_ids=jnp.zeros((batch_size,), jnp.int32), kept_successes=jnp.zeros((batch_size,), jnp.int32),
                   num_kept=z, num_gen_batches=z, num_rollouts=z, num_proposed=z)


def ds_round_add(rnd: DSRound, ids, successes, n, cfg: DynamicSamplingConfig) -> DSRound:
    """Account one generation round: keep filtered groups (in order, up to B), count its rollouts."""
    B = rnd.kept_ids.shape[0]
    keep = filter_mixed(successes, n, cfg.filter_min, cfg.filter_max)
    pos = rnd.num_kept + jnp.cumsum(keep) - 1
    slot = jnp.where(keep & (pos < B), pos, B)  # B = out of bounds, dropped
    return DSRound(
        kept_ids=rnd.kept_ids.at[slot].set(ids.astype(jnp.int32), mode="drop"),
        kept_successes=rnd.kept_successes.at[slot].set(successes.astype(jnp.int32), mode="drop"),
        num_kept=jnp.minimum(rnd.num_kept + keep.sum(), B).astype(jnp.int32),
        num_gen_batches=rnd.num_gen_batches + 1,
        num_rollouts=rnd.num_rollouts + ids.shape[0] * n,
        num_proposed=rnd.num_proposed + ids.shape[0],
    )


def ds_round_done(rnd: DSRound, cfg: DynamicSamplingConfig):
    """True once >= B groups are kept or max_num_gen_batches rounds are spent."""
    return (rnd.num_kept >= rnd.kept_ids.shape[0]) | (rnd.num_gen_batches >= cfg.max_num_gen_batches)


def ds_train_mask(rnd: DSRound):
    """bool[B]: which kept slots hold a group to train on."""
    return jnp.arange(rnd.kept_ids.shape[0]) < rnd.num_kept


def dynamic_sampling_step(selector: Selector, sel_state, candidates, key, rollout_fn: Callable, n: int,
                          cfg: DynamicSamplingConfig, batch_size: int):
    """One DS training step with a pure `rollout_fn(ids i32[B], key) -> successes i32[B]`.

    Returns (selector state, DSRound, first-round predictions f32[M]). Jittable; the rounds run in a
    `lax.while_loop`, so the number of rounds (and rollouts) is data dependent but shapes are static.
    """

    def body(carry):
        state, rnd, pred, k = carry
        k, k_sel, k_roll = jax.random.split(k, 3)
        state, ids, pred_new = selector.select(state, candidates, k_sel)
        successes = rollout_fn(ids, k_roll)
        state = selector.update(state, ids, successes, n)
        pred = jnp.where(rnd.num_gen_batches == 0, pred_new, pred)
        return state, ds_round_add(rnd, ids, successes, n, cfg), pred, k

    init = (sel_state, ds_round_init(batch_size), jnp.full(candidates.shape, jnp.nan, jnp.float32), key)
    state, rnd, pred, _ = lax.while_loop(lambda c: ~ds_round_done(c[1], cfg), body, init)
    return state, rnd, pred


def make_dynamic_sampling(num_prompts: int, batch_size: int, *, max_num_gen_batches: int = 4,
                          filter_min: Optional[float] = None, filter_max: Optional[float] = None):
    """(proposal Selector = Uniform, DynamicSamplingConfig). The trainer/harness runs the filter loop."""
    cfg = DynamicSamplingConfig(max_num_gen_batches, filter_min, filter_max)
    return make_uniform(num_prompts, batch_size), cfg
