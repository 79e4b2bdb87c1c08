"""Sampler: compiled, bucketed, optionally data-parallel generation over a Transformer's params.

    sampler = Sampler(model)                           # nnx.split once; graphdef is static
    out = sampler.generate(prompts, key, SamplingConfig(max_new_tokens=128, eos_ids=(eos,)), num_samples=8)
    sampler.set_state(new_params_state)               # after a training step (same tree structure)

Compiled programs: one per (batch bucket, prompt-length bucket, SamplingConfig, num_samples) for
`generate`; the step-wise API (`start`, `append`, `decode`, `take`) used by the agent loop compiles one per
(batch bucket, chunk bucket, cache length, config). `trace_counts` counts traces per function (tests assert
no retrace after warm-up). Params are passed as the NNX state pytree; the decode state (KV cache) of the
step-wise API is donated so cache updates stay in place.

Data parallel: with `mesh`, prompts are sharded over the mesh's batch axes ('data', 'fsdp' by the model's
sharding rules) and params placed by the same logical-axis rules as training; the batch bucket is a
multiple of the batch-axes size.

Multi-host (after ``jax.distributed.initialize()``): every process calls ``generate`` with its own prompts (the
same number on every process); they form one global batch over the mesh and each process gets back the
samples of its own prompts. The step-wise API below is single-host.
"""
from __future__ import annotations

import collections
import math
from typing import Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from lpo_jax import hosts
from lpo_jax.sampling import generation as dec
from lpo_jax.sampling.buckets import Buckets, pad_left, pad_right
from lpo_jax.sampling.config import SamplingConfig


def as_key(key):
    """Accept an int seed, a typed key or a raw uint32[2] key."""
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


class Sampler:
    """Bucketed jitted generation for one model architecture (graphdef); params can change between calls."""

    def __init__(self, model, *, mesh: jax.sharding.Mesh | None = None, buckets: Buckets | None = None,
                 rules=None, cache_dtype=None, compiler_options: dict | None = None):
        """model: an nnx Transformer or (graphdef, state). mesh/rules: data-parallel generation with params
        placed by the logical-axis rules. cache_dtype: KV cache dtype (default the compute dtype).
        compiler_options: passed to every jax.jit (e.g. {"xla_backend_optimization_level": 0} roughly
        halves CPU compile time at some runtime cost - useful for tests)."""
        if isinstance(model, tuple):
            self.graphdef, state = model
        elif isinstance(model, nnx.Module):
            self.graphdef, state = nnx.split(model)
        else:
            raise TypeError(f"Sampler expects an nnx.Module or a (graphdef, state) pair, got {type(model).__name__}")
        self.mesh, self.rules = mesh, rules
        self.buckets = buckets or Buckets()
        self.cache_dtype = cache_dtype
        self.compiler_options = dict(compiler_options or {})
        self.trace_counts: collections.Counter = collections.Counter()
        self._state_shardings = None
        self._dp = 1
        self._compute_dtype = jnp.dtype(nnx.merge(self.graphdef, state).cfg.dtype)
        if mesh is not None:
            from lpo_jax.models.sharding import DEFAULT_RULES, state_shardings
            self._state_shardings = state_shardings(state, mesh, rules)
            target = (rules or DEFAULT_RULES).get("batch")
            axes = (target,) if isinstance(target, str) else tuple(target or ())
            self._batch_axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1)
            self._dp = math.prod(mesh.shape[a] for a in self._batch_axes)
        self.set_state(state)
        self._jits: dict = {}

    # ------------------------------------------------------------------ params
    def set_state(self, state) -> None:
        """Use new params (an nnx.State with the same structure, e.g. after a training step).

        Floating params are cast once here to the model's compute dtype (e.g. fp32 master -> bf16): the model
        casts every weight to that dtype before use anyway, so outputs are bit-identical, while each decode
        step then reads half the weight bytes (decode is memory-bound on accelerators)."""
        state = jax.tree.map(self._to_compute_dtype, state)
        if self._state_shardings is not None:
            state = jax.device_put(state, self._state_shardings)
        self.state = state

    def _to_compute_dtype(self, x):
        if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != self._compute_dtype:
            return x.astype(self._compute_dtype)
        return x

    @property
    def data_parallel_size(self) -> int:
        """Product of the mesh's batch-axis sizes (batch buckets are multiples of it); 1 without a mesh."""
        return self._dp

    @property
    def model_config(self):
        return nnx.merge(self.graphdef, self.state).cfg

    def _compile(self, fn, **kwargs):
        if self.compiler_options:
            kwargs["compiler_options"] = self.compiler_options
        return jax.jit(fn, **kwargs)

    # ------------------------------------------------------------------ sharding helpers
    def _batch_spec(self, ndim: int):
        if self.mesh is None:
            return None
        spec = jax.sharding.PartitionSpec(self._batch_axes or None, *([None] * (ndim - 1)))
        return jax.sharding.NamedSharding(self.mesh, spec)

    def _replicated(self):
        return None if self.mesh is None else jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

    def _constrain_state(self, st: dec.DecodeState) -> dec.DecodeState:
        """Pin the decode state's shardings: cache by the model's cache rules (batch over the batch axes,
        KV heads over 'tensor' where they divide), hidden / positions over the batch axes."""
        if self.mesh is None:
            return st
        from lpo_jax.models.sharding import cache_shardings
        wsc = jax.lax.with_sharding_constraint
        cache = jax.tree.map(wsc, st.cache, cache_shardings(st.cache, self.mesh, self.rules))
        return dec.DecodeState(cache, wsc(st.hidden, self._batch_spec(2)), wsc(st.next_pos, self._batch_spec(1)))

    def _put_batch(self, x):
        """Rows of this process (all rows with one process) -> a batch-sharded global array."""
        if self.mesh is None:
            return jnp.asarray(x)
        if hosts.count() > 1 and not isinstance(x, jax.Array):
            return hosts.to_global(x, self._batch_spec(np.ndim(x)))
        return jax.device_put(x, self._batch_spec(np.ndim(x)))

    def _put_replicated(self, x):
        return x if self.mesh is None else hosts.replicate(x, self.mesh)

    def _local_batch_multiple(self) -> int:
        """Rows per process must fill whole shards of the batch axes."""
        if self._dp % hosts.count():
            raise ValueError(f"the mesh's batch axes ({self._dp} devices) do not split over "
                             f"{hosts.count()} processes; use a data/fsdp size that is a multiple of it")
        return self._dp // hosts.count()

    # ------------------------------------------------------------------ one-shot generation
    def generate_arrays(self, tokens_NP, mask_NP, key, cfg: SamplingConfig, *, num_samples: int = 1,
                        active_N=None) -> dec.SampleOutput:
        """Device-level call on already padded arrays (shapes should be bucket sizes): device SampleOutput."""
        if not isinstance(cfg, SamplingConfig):
            raise TypeError(f"cfg must be a SamplingConfig, got {type(cfg).__name__}")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        fn = self._jits.get(("generate", cfg, num_samples))
        if fn is None:
            def run(state, tokens, mask, key, active):
                self.trace_counts["generate"] += 1
                model = nnx.merge(self.graphdef, state)
                return dec.generate(model, tokens, mask, key, cfg, num_samples=num_samples, active_N=active,
                                    cache_dtype=self.cache_dtype, constrain=self._constrain_state)
            kwargs = {}
            if self.mesh is not None:
                bs = self._batch_spec
                kwargs["in_shardings"] = (self._state_shardings, bs(2), bs(2), self._replicated(), bs(1))
                kwargs["out_shardings"] = dec.SampleOutput(bs(2), bs(2), bs(2), bs(2), bs(1), bs(1))
            fn = self._jits[("generate", cfg, num_samples)] = self._compile(run, **kwargs)
        n = tokens_NP.shape[0]
        active = np.ones((n,), bool) if active_N is None else active_N
        return fn(self.state, self._put_batch(tokens_NP), self._put_batch(mask_NP),
                  self._put_replicated(as_key(key)), self._put_batch(active))

    def generate(self, prompts: Sequence[Sequence[int]], key, cfg: SamplingConfig, *,
                 num_samples: int = 1) -> dec.SampleOutput:
        """Sample `num_samples` continuations of each prompt / prefix (token lists of any length >= 1).

        Each prompt is prefilled once and its cache shared by its samples. Returns a host (numpy)
        SampleOutput with len(prompts) * num_samples rows, prompt n's k-th sample at row n*K + k.
        """
        prompts = _check_prompts(prompts)
        n = len(prompts)
        if hosts.count() > 1 and hosts.global_max(n) != n:
            raise ValueError("every process must pass the same number of prompts to generate")
        rows = self.buckets.batch_bucket(n, self._local_batch_multiple())
        length = self.buckets.length_bucket(hosts.global_max(max(len(p) for p in prompts)))
        tokens, mask = pad_left(prompts, length, rows, cfg.pad_id)
        active = np.arange(rows) < n
        out = self.generate_arrays(tokens, mask, key, cfg, num_samples=num_samples, active_N=active)
        return jax.tree.map(lambda x: hosts.local_rows(x)[: n * num_samples], out)

    # ------------------------------------------------------------------ step-wise API (agent loop, branching)
    def start(self, prefixes: Sequence[Sequence[int]], max_len: int, *, pad_id: int = 0):
        """Prefill prefixes into a fresh cache of `max_len` slots: (DecodeState [rows], rows, active mask).

        rows is the batch bucket (>= len(prefixes)); filler rows are inactive.
        """
        prefixes = _check_prompts(prefixes)
        n = len(prefixes)
        rows = self.buckets.batch_bucket(n, self._dp)
        length = self.buckets.length_bucket(max(len(p) for p in prefixes))
        if length > max_len:
            raise ValueError(f"prefix bucket {length} exceeds the cache length {max_len}; raise max_len")
        tokens, mask = pad_left(prefixes, length, rows, pad_id)
        fn = self._jits.get(("start", max_len))
        if fn is None:
            def run(state, tokens, mask):
                self.trace_counts["start"] += 1
                model = nnx.merge(self.graphdef, state)
                st = self._constrain_state(dec.empty_state(model, tokens.shape[0], max_len, self.cache_dtype))
                return self._constrain_state(dec.append_tokens(model, st, tokens, mask))
            fn = self._jits[("start", max_len)] = self._compile(run)
        st = fn(self.state, self._put_batch(tokens), self._put_batch(mask))
        return st, rows, np.arange(rows) < n

    def append(self, st: dec.DecodeState, chunks: Sequence[Sequence[int]], *, pad_id: int = 0) -> dec.DecodeState:
        """Append per-row token chunks (len == rows; empty chunks allowed) after each row's last real token.

        The chunk is right-padded to a length bucket; the cache must have room (checked). `st` is donated.
        """
        rows = st.batch_size
        if len(chunks) != rows:
            raise ValueError(f"append needs one chunk per row ({rows}), got {len(chunks)}")
        longest = max((len(c) for c in chunks), default=0)
        if longest == 0:
            return st
        length = self.buckets.length_bucket(longest)
        room = st.cache.max_len - int(st.cache.index)
        if length > room:
            raise ValueError(f"chunk bucket {length} does not fit the {room} free cache slots; raise max_len")
        tokens, mask = pad_right(chunks, length, rows, pad_id)
        fn = self._jits.get("append")
        if fn is None:
            def run(state, st, tokens, mask):
                self.trace_counts["append"] += 1
                return self._constrain_state(dec.append_tokens(nnx.merge(self.graphdef, state), st, tokens, mask))
            fn = self._jits["append"] = self._compile(run, donate_argnums=(1,))
        return fn(self.state, st, self._put_batch(tokens), self._put_batch(mask))

    def decode(self, st: dec.DecodeState, key, cfg: SamplingConfig, *, active=None, limit=None):
        """Decode from the current state (donated): (state', host SampleOutput with all rows)."""
        rows = st.batch_size
        active = np.ones(rows, bool) if active is None else np.asarray(active, bool)
        limit = np.full(rows, cfg.max_new_tokens, np.int32) if limit is None else np.asarray(limit, np.int32)
        if active.shape != (rows,) or limit.shape != (rows,):
            raise ValueError(f"active and limit must have shape ({rows},), got {active.shape}, {limit.shape}")
        fn = self._jits.get(("decode", cfg))
        if fn is None:
            def run(state, st, key, active, limit):
                self.trace_counts["decode"] += 1
                st, out = dec.decode(nnx.merge(self.graphdef, state), st, key, cfg, active_B=active, limit_B=limit)
                return self._constrain_state(st), out
            fn = self._jits[("decode", cfg)] = self._compile(run, donate_argnums=(1,))
        st, out = fn(self.state, st, self._put_replicated(as_key(key)), self._put_batch(active),
                     self._put_batch(limit))
        return st, jax.tree.map(np.asarray, jax.device_get(out))

    def rewind(self, st: dec.DecodeState, seg_start: int, lengths, drop) -> dec.DecodeState:
        """Forget the last drop[b] tokens of row b's segment that started at cache slot seg_start and has
        lengths[b] tokens (host-side stop-string cut): their slots become invalid, positions step back.
        The row's hidden state is stale afterwards: append a chunk (observation) before decoding it again."""
        rows = st.batch_size
        lengths, drop = np.asarray(lengths, np.int32), np.asarray(drop, np.int32)
        if lengths.shape != (rows,) or drop.shape != (rows,) or (drop > lengths).any() or (drop < 0).any():
            raise ValueError("rewind needs lengths and drop of shape (rows,) with 0 <= drop <= lengths")
        fn = self._jits.get("rewind")
        if fn is None:
            def run(st, seg_start, lengths, drop):
                self.trace_counts["rewind"] += 1
                return self._constrain_state(dec.rewind(st, seg_start, lengths, drop))
            fn = self._jits["rewind"] = self._compile(run, donate_argnums=(0,))
        return fn(st, self._put_replicated(jnp.asarray(seg_start, jnp.int32)), self._put_batch(lengths),
                  self._put_batch(drop))

    def take(self, st: dec.DecodeState, rows) -> dec.DecodeState:
        """Rows selected / duplicated by index (len must be a batch bucket for later calls to reuse programs)."""
        rows = np.asarray(rows, np.int32)
        fn = self._jits.get("take")
        if fn is None:
            def run(st, rows):
                self.trace_counts["take"] += 1
                return self._constrain_state(st.take(rows))
            fn = self._jits["take"] = self._compile(run)
        return fn(st, self._put_batch(rows))


def _check_prompts(prompts):
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        prompts = list(prompts)
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id sequences")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            raise TypeError(f"prompt {i} is a string; encode it to token ids first")
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: every prompt/prefix needs at least one token")
        out.append([int(t) for t in p])
    return out
