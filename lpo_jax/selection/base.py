"""The selector interface shared by every prompt-selection method.

A selector is a triple of pure, jittable functions over a state pytree (optax-style: hyperparameters are
closed over when the selector is built, so the functions stay static-shaped and scan-friendly):

    init(key)                                   -> state
    select(state, candidates i32[M], key)       -> (state, selected i32[B], predicted_success f32[M])
    update(state, selected i32[B], successes i32[B], n) -> state      # observed rate s = successes / n

Per-prompt state lives in arrays over the whole pool [N, ...]; never in dicts. `predicted_success` is NaN for
methods that do not predict (Uniform, DAPO dynamic sampling).
"""
from typing import Any, Callable, NamedTuple

SelectorState = Any


class Selector(NamedTuple):
    """A prompt selector: three pure functions with the hyperparameters closed over."""

    init: Callable[..., SelectorState]
    select: Callable[..., tuple]
    update: Callable[..., SelectorState]
