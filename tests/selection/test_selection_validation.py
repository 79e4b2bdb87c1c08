"""Bad inputs give clear errors; the registry; the cheap randomness helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lpo_jax.selection import make_dps, make_mopps, make_selector, make_uniform
from lpo_jax.selection import _random

N, B, K = 12, 4, 8
FACTORIES = {"uniform": make_uniform, "mopps": make_mopps, "dps": make_dps}


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def selector(request):
    sel = FACTORIES[request.param](N, B)
    return sel, sel.init(jax.random.key(0))


def test_ids_out_of_range(selector):
    sel, state = selector
    with pytest.raises(ValueError, match=r"outside \[0, 12\)"):
        sel.update(state, jnp.array([0, 1, 2, 12]), jnp.array([1, 1, 1, 1]), K)
    with pytest.raises(ValueError, match=r"outside \[0, 12\)"):
        sel.select(state, jnp.array([-1, 0, 1, 2, 3]), jax.random.key(0))


def test_successes_above_n(selector):
    sel, state = selector
    with pytest.raises(ValueError, match=r"successes must lie in \[0, n=8\]"):
        sel.update(state, jnp.array([0, 1, 2, 3]), jnp.array([1, 9, 1, 1]), K)
    with pytest.raises(ValueError, match="n .* must be >= 1"):
        sel.update(state, jnp.array([0, 1, 2, 3]), jnp.array([0, 0, 0, 0]), 0)


def test_empty_and_too_small_candidate_sets(selector):
    sel, state = selector
    with pytest.raises(ValueError, match="candidate set is empty"):
        sel.select(state, jnp.zeros((0,), jnp.int32), jax.random.key(0))
    with pytest.raises(ValueError, match="larger than the candidate set"):
        sel.select(state, jnp.array([0, 1, 2]), jax.random.key(0))
    with pytest.raises(ValueError, match="larger than the candidate set"):  # static shapes: caught under jit
        jax.jit(sel.select)(state, jnp.array([0, 1, 2]), jax.random.key(0))
    with pytest.raises(ValueError, match="duplicate"):
        sel.select(state, jnp.array([0, 1, 1, 2, 3]), jax.random.key(0))
    with pytest.raises(TypeError, match="integer prompt ids"):
        sel.select(state, jnp.array([0.0, 1.0, 2.0, 3.0]), jax.random.key(0))


def test_mismatched_update_shapes(selector):
    sel, state = selector
    with pytest.raises(ValueError, match="equal length"):
        sel.update(state, jnp.array([0, 1, 2, 3]), jnp.array([1, 1]), K)


def test_bad_hyperparameters_and_registry():
    with pytest.raises(ValueError, match="batch_size"):
        make_dps(10, 11)
    with pytest.raises(ValueError, match="decay"):
        make_mopps(10, 2, decay=1.5)
    with pytest.raises(ValueError, match="unknown DPS prior"):
        make_dps(10, 2, prior="optimistic")
    with pytest.raises(ValueError, match="emission"):
        make_dps(10, 2, emission="poisson")
    with pytest.raises(ValueError, match="unknown selector"):
        make_selector("random_forest", num_prompts=10, batch_size=2)
    with pytest.raises(ValueError, match="embeddings"):
        make_selector("gps", num_prompts=10, batch_size=2)
    assert make_selector("DPS", num_prompts=10, batch_size=2).init is not None


def test_hash_uniform_and_tie_breaking():
    u = np.asarray(_random.hash_uniform(jnp.uint32(123), jnp.arange(100000)))
    assert 0 < u.min() and u.max() < 1 and stats.kstest(u, "uniform").pvalue > 1e-3
    v = np.asarray(_random.hash_uniform(jnp.uint32(124), jnp.arange(100000)))
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.02  # different seeds: independent streams
    score = jnp.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.5])
    top = jax.jit(_random.top_k_random_ties, static_argnums=1)
    picks = [set(np.asarray(top(score, 3, jnp.uint32(s))).tolist()) for s in range(30)]
    assert all(1 in p and 4 not in p and len(p) == 3 for p in picks)
    assert len({frozenset(p) for p in picks}) >= 4  # the two tied slots vary over {0, 2, 3, 5}
