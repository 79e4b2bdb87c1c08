"""Spec §8 properties of the LPO *loss* (float64): Prop. 1 on a tiny model, off-policy error, Theorem 2 in
the tabular case, token clipping and aggregation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpo_jax.objectives import loss, lpo_coefficients, lpo_divergence, make_config, prepare
from objectives_testlib import kl_np, loss_suite, softmax_np, x64

B, K, T, V = 3, 4, 6, 7
TOL = 1e-6


@pytest.fixture(autouse=True)
def _float64():
    with x64():
        yield


# A tiny autoregressive softmax policy: logits(t, prev token) = pos[t] + prev[prev token].
def _init_theta(rng):
    return {"pos": jnp.asarray(rng.normal(size=(T, V))), "prev": jnp.asarray(rng.normal(size=(V, V)))}


def _token_logp(theta, tokens_BKT):
    prev = jnp.concatenate([jnp.zeros_like(tokens_BKT[..., :1]), tokens_BKT[..., :-1]], -1)
    logits = theta["pos"][None, None] + theta["prev"][prev]
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens_BKT[..., None], -1)[..., 0]


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, V, (B, K, T)))
    lengths = rng.integers(1, T + 1, (B, K))
    lengths[0, 1] = 0  # an empty response
    mask = jnp.asarray((np.arange(T) < lengths[..., None]).astype(np.float64))
    rewards = jnp.asarray(rng.uniform(0.0, 1.0, (B, K)))  # >= 0 so that maxrl is defined
    return rng, _init_theta(rng), tokens, mask, rewards


@jax.jit
def _prop1_grads(theta, theta_b, tokens, mask, targets):
    """{agg: grad_theta of exact LPO_rev, registry LPO_rev (clipped), registry PG, explicit unclipped PG}."""
    old = jax.lax.stop_gradient(_token_logp(theta_b, tokens))
    out = {}
    for agg in ("mean", "sum"):
        lpo_cfg = make_config("lpo_rev", seq_logprob_agg=agg)
        pg_cfg = make_config("grpo", loss_agg="seq-mean-token-mean" if agg == "mean" else "seq-mean-token-sum")
        n = jnp.maximum(mask.sum(-1), 1.0) if agg == "mean" else jnp.ones(mask.shape[:2])

        def exact(th, n=n):
            s = ((_token_logp(th, tokens) - old) * mask).sum(-1) / n
            return lpo_divergence(s, targets.target_logits_BK, "rev").mean()

        def registry(th, cfg):
            return loss(_token_logp(th, tokens), old, mask, targets, cfg)[0]

        def explicit_pg(th, n=n):
            ratio = jnp.exp(_token_logp(th, tokens) - old)
            return -((ratio * mask).sum(-1) / n * targets.advantages_BK).mean()

        out[agg] = (jax.grad(exact)(theta), jax.grad(registry)(theta, lpo_cfg), jax.grad(registry)(theta, pg_cfg),
                    jax.grad(explicit_pg)(theta))
    return out


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


# 5. Prop. 1: on-policy, LPO_rev == PG at parameter level ---------------------------------------------
@pytest.mark.parametrize("baseline", ["grpo", "drgrpo", "rloo", "maxrl"])
def test_prop1_lpo_rev_equals_pg_on_policy(baseline):
    _, theta, tokens, mask, rewards = _problem()
    targets = prepare(rewards, mask, make_config("lpo_rev", baseline=baseline))
    np.testing.assert_allclose(targets.advantages_BK.mean(-1), 0.0, atol=1e-12)
    for agg, grads in _prop1_grads(theta, theta, tokens, mask, targets).items():
        g_exact, g_lpo, g_pg, g_explicit = map(_flat, grads)
        assert np.abs(g_pg).max() > 1e-3
        for g in (g_exact, g_lpo, g_pg):
            np.testing.assert_allclose(g, g_explicit, atol=TOL)


# 6. Off-policy error grows linearly with the drift ------------------------------------------------------
def test_off_policy_error_is_linear_in_drift():
    rng, theta_b, tokens, mask, rewards = _problem(1)
    targets = prepare(rewards, mask, make_config("lpo_rev"))
    direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), theta_b)
    errors = []
    for h in (0.0, 1e-3, 2e-3, 4e-3):
        theta = jax.tree.map(lambda a, d: jnp.asarray(np.asarray(a) + h * np.asarray(d)), theta_b, direction)
        g_exact, _, _, g_pg = map(_flat, _prop1_grads(theta, theta_b, tokens, mask, targets)["mean"])
        errors.append(np.linalg.norm(g_exact - g_pg))
    assert errors[0] < 1e-12
    assert errors[1] > 1e-7
    np.testing.assert_allclose([errors[2] / errors[1], errors[3] / errors[2]], 2.0, rtol=0.1)


# 9. Theorem 2 in the tabular case -----------------------------------------------------------------------
@jax.jit
def _project(s_t, log_w):
    """400 gradient steps (lr 1) on fwd and on rev KL(w*, softmax(s)) from s_t: {kind: s_{t+1}}."""
    step = lambda kind: lambda _, s: s - lpo_coefficients(s, log_w[kind], kind)  # noqa: E731
    return {kind: jax.lax.fori_loop(0, 400, step(kind), s_t[kind]) for kind in ("fwd", "rev")}


def test_theorem2_tabular_monotone_improvement():
    R = np.array([[0.1, 0.5, 0.9, 0.3, 0.0, 0.6], [1.0, -1.0, 0.2, 0.4, 0.8, -0.3]])
    tau, r_max = 0.25, np.abs(R).max()
    s = {"fwd": np.zeros_like(R), "rev": np.zeros_like(R)}
    history = {kind: [(softmax_np(s[kind]) * R).sum(-1)] for kind in s}
    for _ in range(30):
        log_w = {kind: np.log(softmax_np(R / tau + s[kind])) for kind in s}
        s_next = jax.tree.map(np.asarray, _project(s, log_w))
        for kind in s:
            P_t, P_next, w = softmax_np(s[kind]), softmax_np(s_next[kind]), np.exp(log_w[kind])
            eps_proj = 0.5 * np.abs(P_next - w).sum(-1)
            bound = (P_t * R).sum(-1) + tau * (kl_np(w, P_t) + kl_np(P_t, w)) - 2 * r_max * eps_proj
            assert np.all((P_next * R).sum(-1) >= bound - 1e-9), kind
            history[kind].append((P_next * R).sum(-1))
        s = s_next
    for kind, values in history.items():
        values = np.array(values)
        assert np.all(np.diff(values, axis=0) >= -1e-9), kind
        np.testing.assert_allclose(values[-1], R.max(-1), atol=1e-3, err_msg=kind)


# 17-18. Token clipping and aggregation: one compiled program per batch shape evaluates all these configs.
CFGS = (make_config("lpo_fwd"), make_config("lpo_fwd", lpo_clip="none"), make_config("lpo_fwd", lpo_clip="sign"),
        make_config("lpo_rev", lpo_clip="none"), make_config("grpo"),
        make_config("lpo_fwd", lpo_clip="none", lpo_coef_from="clipped"))
FWD, FWD_NONE, FWD_SIGN, REV_NONE, GRPO, FWD_COEF_CLIPPED = range(len(CFGS))


def _run(delta, seed=4, mask=None, rewards=None):
    """All CFGS on logp = old + delta (losses and metrics depend on logp - old only)."""
    rng = np.random.default_rng(seed)
    old = -np.abs(rng.normal(1.0, 0.5, delta.shape))
    if mask is None:
        mask = np.ones(delta.shape)
        mask[2, 3, 3:] = 0.0
    rewards = rng.normal(size=delta.shape[:2]) if rewards is None else rewards
    out = loss_suite(*(jnp.asarray(x) for x in (old + delta, old, mask, rewards, old, np.zeros(delta.shape))),
                     cfgs=CFGS)
    return jax.tree.map(np.asarray, out), mask, rewards


def _closed_form_grad(delta, mask, log_w, kind):
    """d loss / d logp = mask * c_k / (B |y_k|) with c from numpy softmaxes (mean aggregation, no clipping)."""
    n = mask.sum(-1)
    s = (delta * mask).sum(-1) / n
    P, w = softmax_np(s), np.exp(log_w)
    if kind == "fwd":
        c = P - w
    else:
        d = np.log(P) - log_w
        c = P * (d - (P * d).sum(-1, keepdims=True))
    return mask * (c / (delta.shape[0] * n))[..., None], s, c


def test_clipping_zeroes_outside_tokens_and_is_exact_inside():
    rng = np.random.default_rng(0)
    inside = rng.uniform(np.log(0.8) + 0.01, np.log(1.2) - 0.01, (B, K, T))
    outside = rng.random((B, K, T)) < 0.3
    delta = np.where(outside, np.where(rng.random((B, K, T)) < 0.5, 0.5, -0.5), inside)
    out, mask, _ = _run(delta)
    grad = out[FWD]["grad"]
    assert np.all(grad[outside] == 0.0) and np.all(np.abs(grad[~outside & (mask > 0)]) > 0)
    np.testing.assert_allclose(out[FWD]["metrics"]["clip_frac"], (outside * mask).sum() / mask.sum(), atol=1e-12)
    # option: coefficients from the clipped s (default: unclipped s)
    log_w = out[FWD]["targets"].log_w_BK
    clipped_delta = np.clip(delta, np.log(0.8), np.log(1.2))
    _, _, c_clipped = _closed_form_grad(clipped_delta, mask, log_w, "fwd")
    _, _, c_unclipped = _closed_form_grad(delta, mask, log_w, "fwd")
    n = mask.sum(-1)
    np.testing.assert_allclose(out[FWD_COEF_CLIPPED]["grad"], mask * (c_clipped / (B * n))[..., None], atol=1e-12)
    np.testing.assert_allclose(out[FWD_NONE]["grad"], mask * (c_unclipped / (B * n))[..., None], atol=1e-12)
    assert np.abs(c_clipped - c_unclipped).max() > 1e-3
    # all tokens inside the band: clipped gradient == unclipped == closed-form gradient of KL(w*||P)
    out_in, _, _ = _run(inside)
    expected, _, _ = _closed_form_grad(inside, mask, out_in[FWD]["targets"].log_w_BK, "fwd")
    np.testing.assert_allclose(out_in[FWD]["grad"], out_in[FWD_NONE]["grad"], atol=1e-12)
    np.testing.assert_allclose(out_in[FWD]["grad"], expected, atol=TOL)


def test_sign_clipping_cuts_only_the_pushed_side():
    delta = np.zeros((B, K, T))
    delta[..., 0], delta[..., 1] = 0.5, -0.5  # token 0 above the band, token 1 below
    out, mask, _ = _run(delta)
    _, _, c = _closed_form_grad(delta, mask, out[FWD_SIGN]["targets"].log_w_BK, "fwd")
    grad = out[FWD_SIGN]["grad"]
    raising = c < 0  # descent raises s_k: PPO-style clipping cuts tokens already above 1 + eps
    np.testing.assert_array_equal(grad[..., 0] == 0.0, raising)
    np.testing.assert_array_equal(grad[..., 1] == 0.0, ~raising)
    assert np.all(out[FWD]["grad"][..., :2] == 0.0)  # symmetric-hard cuts both


def test_gradient_is_group_sum_prompt_mean_and_value_is_divergence():
    delta = 0.05 * np.random.default_rng(2).normal(size=(B, K, T))
    out, mask, _ = _run(delta)
    res = out[REV_NONE]
    expected, s, _ = _closed_form_grad(delta, mask, res["targets"].log_w_BK, "rev")
    np.testing.assert_allclose(res["grad"], expected, atol=1e-12)
    P, w = softmax_np(s), np.exp(res["targets"].log_w_BK)
    np.testing.assert_allclose(res["value"], kl_np(P, w).mean(), atol=1e-12)
    np.testing.assert_allclose(out[FWD_NONE]["value"], kl_np(w, P).mean(), atol=1e-12)
    np.testing.assert_allclose(res["metrics"]["kl_target_policy"], kl_np(w, P).mean(), atol=1e-12)


def test_duplicate_batch_padding_group_and_permutation():
    delta = 0.1 * np.random.default_rng(3).normal(size=(B, K, T))
    out, mask, rewards = _run(delta)
    # duplicated batch plus a fully masked (padding) group: same loss and metrics, gradient split in half
    delta2 = np.concatenate([delta, delta, delta[:1]])
    mask2 = np.concatenate([mask, mask, np.zeros_like(mask[:1])])
    out2, _, _ = _run(delta2, mask=mask2, rewards=np.concatenate([rewards, rewards, rewards[:1]]))
    for i in (FWD, GRPO):
        np.testing.assert_allclose(out2[i]["value"], out[i]["value"], atol=1e-12)
        for key in out[i]["metrics"]:
            np.testing.assert_allclose(out2[i]["metrics"][key], out[i]["metrics"][key], atol=1e-12, err_msg=key)
        np.testing.assert_allclose(out2[i]["grad"][:B], out[i]["grad"] / 2, atol=1e-12)
        np.testing.assert_allclose(out2[i]["grad"][B:2 * B], out[i]["grad"] / 2, atol=1e-12)
        np.testing.assert_array_equal(out2[i]["grad"][2 * B:], 0.0)
    # permuting responses within a group permutes the gradient (and c)
    perm = np.array([2, 0, 3, 1])
    out3, _, _ = _run(delta[:, perm], mask=mask[:, perm], rewards=rewards[:, perm])
    for i in (FWD, GRPO):
        np.testing.assert_allclose(out3[i]["value"], out[i]["value"], atol=1e-12)
        np.testing.assert_allclose(out3[i]["grad"], out[i]["grad"][:, perm], atol=1e-12)
