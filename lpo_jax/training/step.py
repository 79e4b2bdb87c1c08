"""The pure train step: policy token log-probs -> objective -> gradient -> guarded optimizer update.

``make_train_step`` closes over the static pieces (graphdef, objective, optimizer, shapes) and returns one
function ``train_step(state, batch) -> (state, metrics)`` that the loop jits once, with the state donated.

Gradient accumulation: a mini-batch of whole groups is split into ``micro_batches`` equal slices along the
prompt axis and their gradients are combined under ``lax.scan``, each slice weighted by what its loss averages
over (objectives normalise within the batch they are given): valid groups, or valid tokens when
``token_weighted`` (token-mean aggregation). The combined gradient then equals the full mini-batch's.

Non-finite guard: if the loss, any gradient entry or any updated parameter is not finite, the update is
skipped (params and optimizer state returned unchanged) and ``metrics["skipped"] = 1``; the loop counts
consecutive skips and stops the run.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lpo_jax.models.transformer import vocab_logits
from lpo_jax.training.state import TrainState


@flax.struct.dataclass
class TrainBatch:
    """One mini-batch of whole groups: B prompts x K samples, sequences of L = P + T tokens.

    tokens_BKL: prompt (left-padded to P) followed by the completion (T slots).
    attn_mask_BKL: 1 on real tokens (prompt and generated/observation tokens), 0 on padding.
    loss_mask_BKT: 1 on completion tokens the policy generated (observation and padding tokens are 0).
    old_logp_BKT: behaviour-policy log-probs of the completion tokens.
    ref_logp_BKT: reference-policy log-probs, or None when the objective has no KL term.
    targets: the objective's per-rollout-batch targets (advantages or LPO log-targets), leading axes [B, K].
    """

    tokens_BKL: jax.Array
    attn_mask_BKL: jax.Array
    loss_mask_BKT: jax.Array
    old_logp_BKT: jax.Array
    ref_logp_BKT: jax.Array | None
    targets: Any


def _token_stats(logits_NTV: jax.Array, targets_NT: jax.Array, with_entropy: bool):
    """Log-prob of each target token (and the entropy, else zeros) from logits, in float32."""
    logp_all = jax.nn.log_softmax(logits_NTV.astype(jnp.float32), axis=-1)
    logp_NT = jnp.take_along_axis(logp_all, targets_NT[..., None], axis=-1)[..., 0]
    entropy_NT = -(jnp.exp(logp_all) * logp_all).sum(-1) if with_entropy else jnp.zeros_like(logp_NT)
    return logp_NT, entropy_NT


def completion_logprobs(model: nnx.Module, tokens_NL: jax.Array, attn_mask_NL: jax.Array, prompt_len: int,
                        *, with_entropy: bool = False, logits_chunk: int = 0) -> tuple[jax.Array, jax.Array | None]:
    """Log-probs (and entropies) of tokens[:, prompt_len:] under ``model``: [N, T] each, float32.

    Logits are formed only for the T completion positions (the prompt's logits are never materialised).
    ``logits_chunk`` > 0 forms them ``logits_chunk`` positions at a time under ``lax.scan`` with
    rematerialisation, so peak memory holds [N, chunk, V] logits instead of [N, T, V] (for large vocabularies,
    e.g. Qwen's 152k, at the cost of recomputing the output projection in the backward pass). Same values.
    """
    h_NLD = model.hidden(tokens_NL, attention_mask=attn_mask_NL)
    h_NTD = h_NLD[:, prompt_len - 1:-1]
    targets_NT = tokens_NL[:, prompt_len:]
    N, T = targets_NT.shape
    if not logits_chunk or logits_chunk >= T:
        logp_NT, entropy_NT = _token_stats(model.logits(h_NTD), targets_NT, with_entropy)
        return logp_NT, entropy_NT if with_entropy else None
    C = -(-T // logits_chunk)
    pad = C * logits_chunk - T
    h_CNtD = jnp.pad(h_NTD, ((0, 0), (0, pad), (0, 0))).reshape(N, C, logits_chunk, -1).swapaxes(0, 1)
    tg_CNt = jnp.pad(targets_NT, ((0, 0), (0, pad))).reshape(N, C, logits_chunk).swapaxes(0, 1)
    tied = model.cfg.tie_embeddings

    @jax.checkpoint
    def chunk(weight, h_NtD, tg_Nt):
        return _token_stats(vocab_logits(h_NtD, weight, tied), tg_Nt, with_entropy)

    weight = model.output_weight()
    _, (logp_CNt, ent_CNt) = jax.lax.scan(lambda c, x: (c, chunk(weight, *x)), None, (h_CNtD, tg_CNt))
    unchunk = lambda x: x.swapaxes(0, 1).reshape(N, C * logits_chunk)[:, :T]
    return unchunk(logp_CNt), unchunk(ent_CNt) if with_entropy else None


def batch_logprobs(graphdef: nnx.GraphDef, params: Any, tokens_BKL: jax.Array, attn_mask_BKL: jax.Array,
                   prompt_len: int, logits_chunk: int = 0) -> jax.Array:
    """[B, K, T] completion log-probs for a whole rollout batch (old / reference log-probs, no gradient)."""
    model = nnx.merge(graphdef, params)
    B, K, L = tokens_BKL.shape
    logp, _ = completion_logprobs(model, tokens_BKL.reshape(B * K, L), attn_mask_BKL.reshape(B * K, L), prompt_len,
                                  logits_chunk=logits_chunk)
    return logp.reshape(B, K, L - prompt_len)


def _tree_all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(graphdef: nnx.GraphDef, loss_fn: Callable, optimizer: optax.GradientTransformation,
                    *, prompt_len: int, micro_batches: int = 1, with_entropy: bool = False,
                    token_weighted: bool = False, logits_chunk: int = 0) -> Callable:
    """Builds ``train_step(state, batch) -> (state, metrics)``.

    ``logits_chunk``: see ``completion_logprobs`` (0 = all completion logits at once).

    ``loss_fn(logp_BKT, old_logp_BKT, loss_mask_BKT, targets, ref_logp_BKT=..., entropy_BKT=...)`` returns
    ``(loss, metrics)`` (an objective with its config bound).
    """

    def micro_loss(params, mb: TrainBatch):
        model = nnx.merge(graphdef, params)
        B, K, L = mb.tokens_BKL.shape
        logp, entropy = completion_logprobs(model, mb.tokens_BKL.reshape(B * K, L),
                                            mb.attn_mask_BKL.reshape(B * K, L), prompt_len,
                                            with_entropy=with_entropy, logits_chunk=logits_chunk)
        T = L - prompt_len
        logp = logp.reshape(B, K, T)
        entropy = None if entropy is None else entropy.reshape(B, K, T)
        return loss_fn(logp, mb.old_logp_BKT, mb.loss_mask_BKT, mb.targets,
                       ref_logp_BKT=mb.ref_logp_BKT, entropy_BKT=entropy)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def train_step(state: TrainState, batch: TrainBatch):
        B = batch.tokens_BKL.shape[0]
        if B % micro_batches:
            raise ValueError(f"mini-batch of {B} prompts does not split into {micro_batches} micro-batches")
        if micro_batches == 1:
            (loss, metrics), grads = grad_fn(state.params, batch)
        else:
            micro = jax.tree.map(lambda x: x.reshape(micro_batches, B // micro_batches, *x.shape[1:]), batch)

            def weight(mb):
                mask = mb.loss_mask_BKT
                return mask.sum() if token_weighted else (mask.sum((1, 2)) > 0).sum().astype(mask.dtype)

            def body(acc, mb):
                (loss, metrics), grads = grad_fn(state.params, mb)
                w = weight(mb)
                return jax.tree.map(lambda a, x: a + w * x, acc, (loss, metrics, grads, 1.0)), None

            shapes = jax.eval_shape(lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro)))
            zero = jax.tree.map(jnp.zeros_like, (shapes[0][0], shapes[0][1], shapes[1], jnp.float32(0)))
            (loss, metrics, grads, total), _ = jax.lax.scan(body, zero, micro)
            loss, metrics, grads = jax.tree.map(lambda x: x / jnp.maximum(total, 1.0), (loss, metrics, grads))
        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _tree_all_finite(grads) & _tree_all_finite(new_params)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state.replace(step=state.step + finite.astype(jnp.int32),
                                  params=keep(new_params, state.params),
                                  opt_state=keep(new_opt_state, state.opt_state))
        metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                       skipped=1.0 - finite.astype(jnp.float32))
        return new_state, metrics

    return train_step
