"""Shared success predictor Ṽψ(H) for prompts and prefixes (spec §1.4, our design).

phi(H) = [stop_gradient(mean-pooled hidden state h, [D]), turn / max_turns, searches / max_turns]
-> Linear(F, hidden) -> tanh -> Linear(hidden, 1) -> sigmoid.   (F = D + 2)

Ensemble [ours]: ``ensemble`` = E >= 1 members of that MLP (independent inits, each trained on its own
minibatches from the shared ring; params carry a leading [E] axis). `predict` is the members' mean;
`predict_members` gives all E values, so stage 1 can maximise the *expected* objective over the members
(`allocation.allocate_roots_dp` with v [E, P]): a question the members disagree on (unfamiliar, e.g. a
longer question than any labelled one) is worth less than one they agree is mid-difficulty. E = 1 is the
spec's single predictor. Measured on the SynthHop testbed (experiments/compare_trace.py settings, seeds
0-5): E = 5 left the contrast ratio unchanged (0.833 vs 0.837 with 3 continuations per root; 0.797-0.808
vs 0.789 with 2), so the testbed config keeps E = 1.

Training: weighted MSE (default) or soft-target BCE on tree targets V̂, weight = leaves under the node
(`targets.predictor_targets`); rows go to a FIFO replay ring of `buffer_size` (static arrays, padded rows
skipped); each RL step runs `n_updates` Adam steps on minibatches drawn uniformly from the filled ring,
*before* the next allocation. ``prompt_share`` > 0 [ours]: prompt rows (turn 0, stage 1's inputs; a few
per step against many prefix rows) carry that share of each minibatch's weight (`balance_prompt_rows`).
Warm start: `predict` returns 0.5 while fewer than `n_warm` RL steps have been recorded (uniform stages).
The whole state is a pytree (checkpoint it with the trainer state).

Use (all jittable with the config static)::

    state = predictor_init(cfg, key)
    x = features(h, turn, n_search, cfg.max_turns)                          # [N, D + 2]
    v = predict(cfg, state, x)                                              # [N] in [0, 1]
    v_E = predict_members(cfg, state, x)                                    # [E, N], mean over E = v
    state, metrics = predictor_step(cfg, state, x, target, weight, valid, key)
"""
from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import optax

LOSSES = ("mse", "bce")


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """Static predictor settings (hashable; pass as a static jit argument)."""

    feature_dim: int                      # D of the pooled hidden state
    hidden: int = 64
    max_turns: int = 5
    lr: float = 1e-3
    n_updates: int = 4
    batch_size: int = 256
    buffer_size: int = 4096
    n_warm: int = 0
    loss: str = "mse"
    init_scale: float = 1.0
    prompt_share: float = 0.0             # > 0: prompt rows (turn 0) carry this share of each minibatch's weight
    ensemble: int = 1                     # E members (module docstring); 1 = the spec's single predictor

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"PredictorConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("feature_dim", "hidden", "max_turns", "batch_size", "buffer_size", "ensemble"):
            if getattr(self, name) < 1:
                raise ValueError(f"PredictorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_updates < 0 or self.n_warm < 0 or self.lr <= 0:
            raise ValueError("PredictorConfig needs n_updates >= 0, n_warm >= 0 and lr > 0")
        if not 0.0 <= self.prompt_share < 1.0:
            raise ValueError(f"PredictorConfig.prompt_share must be in [0, 1), got {self.prompt_share}")

    @property
    def in_dim(self) -> int:
        return self.feature_dim + 2


@flax.struct.dataclass
class PredictorState:
    params: dict              # leaves with a leading [E] member axis
    opt_state: optax.OptState
    buf_x: jnp.ndarray        # [S, F]
    buf_y: jnp.ndarray        # [S]
    buf_w: jnp.ndarray        # [S]
    buf_valid: jnp.ndarray    # [S] bool
    write_pos: jnp.ndarray    # i32, next ring slot
    rl_steps: jnp.ndarray     # i32, RL steps recorded (warm start counter)


def _optimizer(cfg: PredictorConfig):
    return optax.adam(cfg.lr)


def features(h_ND, turn_N, n_search_N, max_turns: int):
    """phi(H) = [stop_gradient(h), turn / max_turns, n_search / max_turns], [N, D + 2] float32."""
    h = jax.lax.stop_gradient(jnp.asarray(h_ND, jnp.float32))
    extra = jnp.stack([jnp.asarray(turn_N, jnp.float32), jnp.asarray(n_search_N, jnp.float32)], -1) / max_turns
    return jnp.concatenate([h, extra], -1)


def _member_init(cfg: PredictorConfig, key) -> dict:
    k1, k2 = jax.random.split(key)
    F, H = cfg.in_dim, cfg.hidden
    return {"w1": cfg.init_scale * jax.random.normal(k1, (F * H,)).reshape(F, H) / jnp.sqrt(F),
            "b1": jnp.zeros((H,)),
            "w2": cfg.init_scale * jax.random.normal(k2, (H,)) / jnp.sqrt(H), "b2": jnp.zeros(())}


def predictor_init(cfg: PredictorConfig, key) -> PredictorState:
    params = jax.vmap(lambda k: _member_init(cfg, k))(jax.random.split(key, cfg.ensemble))
    S, F = cfg.buffer_size, cfg.in_dim
    return PredictorState(params, _optimizer(cfg).init(params), jnp.zeros((S, F)), jnp.zeros((S,)),
                          jnp.zeros((S,)), jnp.zeros((S,), bool), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _logits(member, x_NF):
    """One member's logits, [N]."""
    return jnp.tanh(x_NF @ member["w1"] + member["b1"]) @ member["w2"] + member["b2"]


def member_values(params, x_NF):
    """sigmoid(MLP_e(x)) of every member without the warm start, [E, N]."""
    x = jnp.asarray(x_NF, jnp.float32)
    return jax.vmap(lambda member: jax.nn.sigmoid(_logits(member, x)))(params)


def predict_raw(params, x_NF):
    """Members' mean of sigmoid(MLP(x)) without the warm start, [N]."""
    return member_values(params, x_NF).mean(0)


def predict_members(cfg: PredictorConfig, state: PredictorState, x_NF):
    """Every member's Ṽψ in [0, 1], [E, N]; 0.5 everywhere during the first `n_warm` RL steps."""
    _check_x(cfg, x_NF)
    return jnp.where(state.rl_steps < cfg.n_warm, 0.5, member_values(state.params, x_NF))


def predict(cfg: PredictorConfig, state: PredictorState, x_NF):
    """Ṽψ in [0, 1] (the members' mean), [N]; 0.5 everywhere during the first `n_warm` RL steps."""
    return predict_members(cfg, state, x_NF).mean(0)


def _check_x(cfg, x_NF):
    if jnp.ndim(x_NF) != 2 or jnp.shape(x_NF)[-1] != cfg.in_dim:
        raise ValueError(f"features must be [N, {cfg.in_dim}] (feature_dim + 2, see features()), got "
                         f"{jnp.shape(x_NF)}")


def member_loss(member, x_NF, y_N, w_N, kind: str = "mse"):
    """One member's weighted mean of squared error (or soft BCE) over rows; 0 when all weights are 0."""
    logits = _logits(member, x_NF)
    if kind == "mse":
        per = (jax.nn.sigmoid(logits) - y_N) ** 2
    else:
        per = optax.sigmoid_binary_cross_entropy(logits, y_N)
    return (w_N * per).sum() / jnp.maximum(w_N.sum(), 1e-8)


def loss_fn(params, x_NF, y_N, w_N, kind: str = "mse"):
    """Sum of the members' losses (`member_loss`); rows shared ([N, ...]) or one minibatch per member
    ([E, N, ...]). Members share no parameters, so each member's gradient is that of its own loss."""
    axis = 0 if jnp.ndim(y_N) == 2 else None
    per_member = jax.vmap(member_loss, in_axes=(0, axis, axis, axis, None))(params, x_NF, y_N, w_N, kind)
    return per_member.sum()


def push(cfg: PredictorConfig, state: PredictorState, x_NF, y_N, w_N, valid_N) -> PredictorState:
    """Writes the valid rows (in order) into the FIFO ring; if more than buffer_size, keeps the last ones."""
    _check_x(cfg, x_NF)
    S = cfg.buffer_size
    valid = jnp.asarray(valid_N, bool) & (jnp.asarray(w_N) > 0)
    rank = jnp.cumsum(valid) - 1
    n_new = valid.sum()
    keep = valid & (rank >= n_new - S)
    slot = jnp.where(keep, (state.write_pos + rank) % S, S)  # S = out of range -> dropped
    put = lambda buf, val: buf.at[slot].set(jnp.asarray(val, buf.dtype), mode="drop")
    return state.replace(buf_x=put(state.buf_x, x_NF), buf_y=put(state.buf_y, y_N), buf_w=put(state.buf_w, w_N),
                         buf_valid=put(state.buf_valid, keep),
                         write_pos=((state.write_pos + n_new) % S).astype(jnp.int32))


def balance_prompt_rows(cfg: PredictorConfig, x_NF, w_N):
    """With ``prompt_share`` s > 0: rescale weights so that prompt rows (turn feature 0) sum to s and prefix
    rows to 1 - s (a group that is absent leaves the other alone; the loss divides by the total). s = 0:
    weights unchanged."""
    if cfg.prompt_share <= 0:
        return w_N
    is_prompt = x_NF[:, cfg.feature_dim] == 0
    w_p, w_q = jnp.where(is_prompt, w_N, 0.0), jnp.where(is_prompt, 0.0, w_N)
    return (cfg.prompt_share * w_p / jnp.maximum(w_p.sum(), 1e-8)
            + (1.0 - cfg.prompt_share) * w_q / jnp.maximum(w_q.sum(), 1e-8))


def train(cfg: PredictorConfig, state: PredictorState, key):
    """`n_updates` Adam steps, each member on its own uniform minibatch from the ring -> (state, metrics
    {'loss' (members' mean), 'n_buffer'})."""
    tx = _optimizer(cfg)
    n_filled = state.buf_valid.sum()
    probs = state.buf_valid / jnp.maximum(n_filled, 1)

    def one(carry, k):
        params, opt_state = carry
        idx = jax.random.choice(k, cfg.buffer_size, (cfg.ensemble, cfg.batch_size), p=probs)   # [E, B]
        w = jax.vmap(functools.partial(balance_prompt_rows, cfg))(state.buf_x[idx],
                                                                  state.buf_w[idx] * state.buf_valid[idx])
        loss, grads = jax.value_and_grad(loss_fn)(params, state.buf_x[idx], state.buf_y[idx], w, cfg.loss)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        skip = n_filled == 0
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(skip, b, a), new, old)
        return (keep(new_params, params), keep(new_opt, opt_state)), loss / cfg.ensemble

    (params, opt_state), losses = jax.lax.scan(one, (state.params, state.opt_state),
                                               jax.random.split(key, max(cfg.n_updates, 1))[: cfg.n_updates])
    loss = losses[-1] if cfg.n_updates else jnp.zeros(())
    return state.replace(params=params, opt_state=opt_state), {"loss": loss, "n_buffer": n_filled}


@functools.partial(jax.jit, static_argnums=0)
def predictor_step(cfg: PredictorConfig, state: PredictorState, x_NF, y_N, w_N, valid_N, key):
    """push + train + count one RL step (jitted; cfg static). Returns (state, metrics)."""
    state = push(cfg, state, x_NF, y_N, w_N, valid_N)
    state, metrics = train(cfg, state, key)
    return state.replace(rl_steps=state.rl_steps + 1), metrics


def weighted_mse(pred_N, target_N, weight_N):
    """Σ w (pred - target)^2 / Σ w (padded rows: weight 0)."""
    w = jnp.asarray(weight_N, jnp.float32)
    return (w * (pred_N - target_N) ** 2).sum() / jnp.maximum(w.sum(), 1e-8)
