"""Shared helpers for the objectives tests: float64 context, random groups, independent reference formulas."""
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax.objectives import Targets, loss, prepare


@contextlib.contextmanager
def x64():
    """float64 only inside the block (never flipped globally for other test modules)."""
    with jax.enable_x64(True):
        yield


def softmax_np(x, axis=-1):
    z = np.exp(x - x.max(axis, keepdims=True))
    return z / z.sum(axis, keepdims=True)


def kl_np(p, q):
    """KL(p||q) per row, numpy float64, 0 log 0 = 0 (independent of the library)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(-1)


def random_groups(rng, B, K, T, *, binary=False, drift=0.0, min_len=1):
    """rewards [B,K], mask [B,K,T] (prefix masks, lengths >= min_len), old/new token log-probs (float64)."""
    rewards = rng.integers(0, 2, (B, K)).astype(np.float64) if binary else rng.normal(size=(B, K))
    lengths = rng.integers(min_len, T + 1, (B, K))
    mask = (np.arange(T)[None, None] < lengths[..., None]).astype(np.float64)
    old = -np.abs(rng.normal(1.0, 0.7, (B, K, T)))
    new = old + drift * rng.normal(size=(B, K, T))
    return rewards, mask, old, new


def targets_from(advantages, phi, tau=None, zero_var=None):
    B = phi.shape[0]
    return Targets(advantages_BK=jnp.asarray(advantages), target_logits_BK=jnp.asarray(phi),
                   tau_B=jnp.ones(B) if tau is None else jnp.asarray(tau),
                   zero_var_B=jnp.zeros(B, bool) if zero_var is None else jnp.asarray(zero_var))


@functools.partial(jax.jit, static_argnames="cfgs")
def loss_suite(logp, old, mask, rewards, ref, entropy, cfgs):
    """prepare + loss + grads (w.r.t. logp and entropy) of every config in `cfgs`, as one compiled program.

    Tests share one compilation per (cfgs, shape) instead of one per config: compiles dominate test time here.
    """
    out = []
    for cfg in cfgs:
        targets = prepare(rewards, mask, cfg)
        fn = lambda lp, ent, cfg=cfg, targets=targets: loss(  # noqa: E731
            lp, old, mask, targets, cfg, ref_logp_BKT=ref, entropy_BKT=ent)
        (value, metrics), (grad, grad_entropy) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(logp, entropy)
        out.append(dict(targets=targets, value=value, metrics=metrics, grad=grad, grad_entropy=grad_entropy))
    return out
