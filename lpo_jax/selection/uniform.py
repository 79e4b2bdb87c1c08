"""Uniform selection: the next `batch_size` prompts of a shuffled epoch (the dataloader baseline).

The epoch order is a keyed hash of the prompt id (a random permutation, cheap at millions of prompts).
`select` takes the earliest not-yet-served candidates in that order. When fewer than `batch_size` unserved
candidates remain, a new epoch starts with a fresh order drawn from the select key and the leftover
prompts are skipped (drop_last semantics, as a dataloader with `drop_last=True`). Predictions are NaN.
"""
import jax.numpy as jnp
from flax import struct
from jax import lax

from lpo_jax.selection import _random
from lpo_jax.selection.base import Selector
from lpo_jax.selection.validation import check_common_hparams, validate_candidates, validate_update


@struct.dataclass
class UniformState:
    served_N: jnp.ndarray  # bool[N]: already served in the current epoch
    epoch_seed: jnp.ndarray  # uint32: hash seed of the current epoch's order
    epoch: jnp.ndarray  # int32: number of completed epochs


def make_uniform(num_prompts: int, batch_size: int) -> Selector:
    """Uniform (epoch-shuffled) selector over a pool of `num_prompts` prompts."""
    check_common_hparams(num_prompts, batch_size)
    B = int(batch_size)

    def init(key):
        return UniformState(served_N=jnp.zeros((num_prompts,), bool), epoch_seed=_random.key_to_seed(key),
                            epoch=jnp.int32(0))

    def select(state, candidates, key):
        validate_candidates(candidates, num_prompts, B)
        served_M = state.served_N[candidates]
        rollover = jnp.sum(~served_M) < B
        seed = jnp.where(rollover, _random.key_to_seed(key), state.epoch_seed)
        served_N = jnp.where(rollover, False, state.served_N)
        served_M = jnp.where(rollover, False, served_M)
        order_M = _random.hash_uniform(seed, candidates)
        pos = lax.top_k(jnp.where(served_M, -jnp.inf, -order_M), B)[1]
        selected = candidates[pos]
        new = UniformState(served_N=served_N.at[selected].set(True), epoch_seed=seed,
                           epoch=state.epoch + rollover.astype(jnp.int32))
        return new, selected, jnp.full(candidates.shape, jnp.nan, jnp.float32)

    def update(state, selected, successes, n):
        validate_update(selected, successes, n, num_prompts)
        return state

    return Selector(init=init, select=select, update=update)
