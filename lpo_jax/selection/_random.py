"""Cheap counter-based randomness for selectors over millions of prompts.

`jax.random` (threefry) costs ~10-40 ms per million uniforms on a small CPU and `jax.random.beta` several
seconds per million draws, which would dominate a selector step at 1M prompts. Selectors therefore draw
their per-prompt noise from an integer hash of (prompt index, 32-bit seed), with the seed taken from the
caller's PRNG key (`jax.random.bits`), so results stay deterministic given the key. The mixer is the
public-domain "triple32" integer hash (low avalanche bias); streams with different seeds are treated as
independent. Good enough for tie-breaking, shuffles and Thompson draws; not a cryptographic generator.

`beta_sample` is exact Marsaglia-Tsang gamma rejection (with the U^(1/a) boost for shape < 1) run as a
vectorised `lax.while_loop` that redraws only rejected entries; tests check it against numpyro's Beta CDF.
"""
import jax
import jax.numpy as jnp
from jax import lax

_GOLDEN = 0x9E3779B9


def key_to_seed(key, stream: int = 0):
    """A uint32 seed from a PRNG key (typed or raw) and a stream number."""
    return jax.random.bits(jax.random.fold_in(key, stream), (), jnp.uint32)


def _triple32(x):
    x = x ^ (x >> 17)
    x = x * jnp.uint32(0xED5AD4BB)
    x = x ^ (x >> 11)
    x = x * jnp.uint32(0xAC4C1B51)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x31848BAB)
    return x ^ (x >> 14)


def counters(n: int):
    """uint32 counters 0..n-1, materialised: an iota fused into heavy math made XLA CPU ~4x slower."""
    return lax.optimization_barrier(jnp.arange(n, dtype=jnp.uint32))


def hash_bits(seed, counter):
    """uint32 hash of (seed, counter); `counter` any integer array, `seed` a uint32 scalar."""
    return _triple32(counter.astype(jnp.uint32) * jnp.uint32(_GOLDEN) ^ seed)


def hash_uniform(seed, counter):
    """Uniform floats in the open interval (0, 1), one per counter entry (24 random bits)."""
    bits = hash_bits(seed, counter) >> 8
    return (bits.astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))


def hash_normal(seed, counter):
    """Standard normals by inverse CDF (erf_inv) of hashed uniforms (cheaper than Box-Muller's cos)."""
    u = hash_uniform(seed, counter)
    return jnp.sqrt(2.0).astype(jnp.float32) * lax.erf_inv(2.0 * u - 1.0)


def _marsaglia_tsang(seed, d, idx):
    """One Marsaglia-Tsang proposal per entry for Gamma(d + 1/3); -1 where the proposal was rejected.

    Returned packed (one array, not an (accepted, value) pair) so that XLA CPU emits a single loop fusion
    per round instead of materialising every intermediate of the erf_inv polynomial.
    """
    c = 1.0 / jnp.sqrt(9.0 * d)
    z = hash_normal(seed, idx)
    u = hash_uniform(seed ^ jnp.uint32(0x1B873593), idx)
    v = (1.0 + c * z) ** 3
    safe_v = jnp.where(v > 0, v, 1.0)
    ok = (v > 0) & (jnp.log(u) < 0.5 * z * z + d - d * safe_v + d * jnp.log(safe_v))
    return jnp.where(ok, d * safe_v, -1.0)


def _redraw_until_accepted(seed, d, idx, out, max_rounds):
    def cond(carry):
        r, out = carry
        return (r < max_rounds) & jnp.any(out < 0)

    def body(carry):
        r, out = carry
        prop = _marsaglia_tsang(hash_bits(seed, r.astype(jnp.uint32)), d, idx)
        return r + 1, jnp.where(out < 0, prop, out)

    out = lax.while_loop(cond, body, (jnp.int32(2), out))[1]
    return jnp.where(out < 0, d, out)  # after max_rounds rejections (prob. < 0.05**max_rounds): the mode


def _gamma_boosted(seed, shape_N, max_rounds: int):
    """Gamma(shape + 1) draws by Marsaglia-Tsang rejection, vectorised.

    Shape + 1 >= 1 keeps acceptance >= 95% per proposal. Two proposal rounds run over all entries
    (one fused loop each); the few still rejected (<= 0.05**2 of them) are gathered with `lax.top_k`
    into 1024 slots at a time and redrawn there until accepted; the gather repeats while any
    remain, so the result is exact (up to a 0.05**max_rounds tail, after which the mode is returned).
    Prefix-sum compaction, `lax.cond` and full-array redraw loops were all several times slower on CPU.
    """
    n = shape_N.shape[0]
    d_N = shape_N + 1.0 - 1.0 / 3.0
    idx_N = counters(n)
    out_N = _marsaglia_tsang(hash_bits(seed, jnp.uint32(0)), d_N, idx_N)
    for r in (1,):
        out_N = jnp.where(out_N < 0, _marsaglia_tsang(hash_bits(seed, jnp.uint32(r)), d_N, idx_N), out_N)
    cap = min(n, 1024)  # top_k cost grows with k: small batches, repeated while any remain

    def fix_some(carry):
        it, out = carry
        slot_C = lax.top_k(-out, cap)[1]  # rejected entries (-1) first
        sub_seed = hash_bits(seed ^ jnp.uint32(0x51ED27), it.astype(jnp.uint32))
        small = _redraw_until_accepted(sub_seed, d_N[slot_C], slot_C.astype(jnp.uint32), out[slot_C], max_rounds)
        return it + 1, out.at[slot_C].set(small)

    return lax.while_loop(lambda c: jnp.any(c[1] < 0), fix_some, (jnp.int32(0), out_N))[1]


def gamma_sample(seed, shape_N, max_rounds: int = 64):
    """Gamma(shape, 1) draws for a 1-D array of shapes > 0 (exact up to a 0.05**max_rounds tail)."""
    g = _gamma_boosted(seed, shape_N, max_rounds)
    u = hash_uniform(seed ^ jnp.uint32(0x2545F491), counters(shape_N.shape[0]))
    return g * jnp.exp(jnp.log(u) / shape_N)  # Gamma(a) = Gamma(a + 1) * U^(1/a)


def beta_sample(key, alpha_N, beta_N):
    """Beta(alpha, beta) draws for 1-D arrays as X / (X + Y), X ~ Gamma(alpha), Y ~ Gamma(beta)."""
    n = alpha_N.shape[0]
    xy = gamma_sample(key_to_seed(key, 1), jnp.concatenate([alpha_N, beta_N]))  # one pass over 2N
    return xy[:n] / (xy[:n] + xy[n:])


def top_k_random_ties(score_M, k: int, seed):
    """Indices of the k largest scores; exact ties at the k-th value are broken uniformly at random.

    Two `lax.top_k` passes: the first finds the k-th largest value v, the second ranks
    (score > v) first, then entries equal to v in hashed random order. Costs O(M) plus two top-k.
    """
    # min() rather than [-1]: XLA CPU rewrites a sliced top_k output into a full sort (~100x slower).
    v = jnp.min(lax.top_k(score_M, k)[0])
    u = hash_uniform(seed, counters(score_M.shape[0]))
    priority = jnp.where(score_M > v, 2.0, jnp.where(score_M == v, u, -1.0))
    return lax.top_k(priority, k)[1]


def smallest_uniform_order_stats(seed, n, k: int):
    """The k smallest of n iid U(0, 1) draws, ascending, f32[k]; entries past n (when n < k) are NaN.

    Exact law via exponential spacings (Renyi): -log(1 - U_(i)) = sum_{j<=i} E_j / (n - j + 1), E_j ~ Exp(1)
    iid; `n` may be a traced integer (<= 2**24, exact in float32).
    """
    j = jnp.arange(k, dtype=jnp.float32)  # j = 0..k-1 stands for the (j+1)-th smallest
    remaining = n.astype(jnp.float32) - j if hasattr(n, "astype") else jnp.float32(n) - j
    e = -jnp.log(hash_uniform(seed, counters(k)))
    spacing = jnp.cumsum(e / jnp.where(remaining > 0, remaining, 1.0))
    return jnp.where(remaining > 0, -jnp.expm1(-spacing), jnp.nan)


def sample_without_replacement(seed, m: int, count, k: int, accept, proposals: int = 512, max_rounds: int = 64):
    """A uniformly random ordered sample of `count` (<= k, may be traced) distinct positions in [0, m) among
    those where `accept(pos)` holds, by sequential rejection: iid uniform proposals (top bits of hashes,
    rejected when >= m), kept if accepted and not proposed before. Exact when most positions are accepted
    (expected rounds ~ count / (proposals * accepted fraction)); cost O(k * proposals) per round, not O(m).

    Returns (i32[k] positions, first `count` valid, the rest -1; done: bool, False if max_rounds ran out).
    """
    bits = max(1, (m - 1).bit_length())
    prop_idx = counters(proposals)
    earlier = jnp.arange(proposals)[:, None] > jnp.arange(proposals)[None, :]  # [j, i]: i proposed before j

    def body(carry):
        r, filled, out = carry
        pos = (hash_bits(hash_bits(seed, r.astype(jnp.uint32)), prop_idx) >> (32 - bits)).astype(jnp.int32)
        ok = (pos < m) & accept(jnp.minimum(pos, m - 1))
        dup = jnp.any((pos[:, None] == pos[None, :]) & earlier, axis=1) | jnp.any(pos[:, None] == out[None, :], axis=1)
        keep = ok & ~dup
        slot = filled + jnp.cumsum(keep, dtype=jnp.int32) - 1
        out = out.at[jnp.where(keep & (slot < count), slot, k)].set(pos, mode="drop")
        return r + 1, jnp.minimum(filled + jnp.sum(keep, dtype=jnp.int32), count), out

    r, filled, out = lax.while_loop(lambda c: (c[1] < count) & (c[0] < max_rounds), body,
                                    (jnp.int32(0), jnp.int32(0), jnp.full((k,), -1, jnp.int32)))
    return out, filled >= count
