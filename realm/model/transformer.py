"""The forward pass: token ids in, logits out, as a fixed sequence of backend ops on fixed buffers.

The shared block reads like the paper::

    h   = x + attention(norm(x))      # + a post-attention norm where the family has one
    out = h + ffn(norm(h))            # + a post-FFN norm where the family has one

and the family (`Architecture`) supplies what differs: RoPE mode, activation, sliding
windows, embedding scale. Optional tensors (Q/K/V biases, per-head Q/K norms, post norms)
are used when the file has them.

Every intermediate has a name (``inp_embd``, ``blk.3.attn_out``, ``result_norm``...);
`Transformer.hooks` maps names to callables that can read or replace them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from realm.arguments import check_int, check_token_ids
from realm.backend import Backend, DeviceArray, QuantTensor
from realm.engine.blocks import BlockTable
from realm.errors import CallOrderError, ContextOverflowError, InvalidParameterError, NumericalError
from realm.gguf.types import GGMLType
from realm.model.architecture import Architecture
from realm.model.config import ModelConfig
from realm.model.kv_cache import KVCache
from realm.model.passes import Batch, Pass, PassIndices, RunState, finite_rows
from realm.model.weights import ModelWeights
from realm.step_program import StepProgram, StepRecorder

# A hook gets (name, host copy of the tensor) and returns None to leave it or an array to replace it.
Hook = Callable[[str, np.ndarray], "np.ndarray | None"]

# Positions the KV pool may hold over all sequences unless load(kv_size=) says otherwise: its
# memory grows with use, so this bounds what a busy engine can take before requests queue.
DEFAULT_KV_SIZE = 16384
# Passes of up to this many tokens run as one compiled program where the backend offers
# them (realm.step_program): their ops are small, so calling each from Python would cost
# as much as their work. Longer passes spend their time in matmuls and call ops one by one.
STEP_PROGRAM_MAX_TOKENS = 64
# Programs kept (the most recently used): an engine's passes come in many sizes (tokens x
# rows of logits), and each program holds ~100 KB of encoded calls.
STEP_PROGRAMS_KEPT = 32


class Transformer:
    """Runs a loaded model on its backend over a paged KV cache shared by many sequences.

    `forward` runs one batch of tokens from any number of sequences (the engine's step). The
    research API (`eval`, `embed` / `forward_layer` / `finish`, `reset`, `truncate`) runs
    one sequence of its own, held in the same pool. ``lock`` is held while a pass runs: by
    the engine for each step, and by a research pass from `embed` until `finish`.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        arch: Architecture,
        weights: ModelWeights,
        backend: Backend,
        n_ctx: int,
        n_batch: int = 256,
        kv_size: int | None = None,
    ) -> None:
        self.cfg, self.arch, self.w, self.backend = cfg, arch, weights, backend
        self.n_ctx = n_ctx  # the most positions one sequence may have
        self.n_batch = n_batch
        self.state = RunState.allocate(backend, cfg, n_batch)
        self.cache = KVCache(backend, cfg, kv_size or max(n_ctx, DEFAULT_KV_SIZE))
        self.hooks: dict[str, Hook] = {}
        self.lock = threading.RLock()
        self._solo: BlockTable | None = None  # the research API's sequence
        self._pass: Pass | None = None
        self._pass_holds_lock = False
        self._pass_thread: int | None = None  # the thread whose research pass holds the lock
        self.closed = False  # set by Model.close: passes are refused from then on
        self._watch: Hook | None = None  # sees every intermediate while a NaN is being traced
        self._embd_scale = arch.embedding_scale()
        self._attn_scale = arch.attention_scale()
        # Weights of these types multiply activations rounded to 16-bit integer blocks
        # (matmul_q16) where the backend offers it; the rest multiply float32.
        self._q16_types = frozenset(t for t in GGMLType if backend.supports("matmul_q16", t))
        # Q/K/V and gate/up share their input: one call for each group where the backend can.
        self._q16_groups = frozenset(t for t in GGMLType if backend.supports("matmuls_q16", t))
        # Fused ops, used where no hook wants the intermediates they skip: a norm folded into
        # the rounding of the matmuls after it, and RoPE with the KV write.
        self._norm_groups = frozenset(t for t in GGMLType if backend.supports("rms_norm_matmuls_q16", t))
        self._fuses_rope_kv = backend.supports("rope_write_kv")
        # The logits' check for NaN and infinities runs in the pass, on rows still in the caches.
        self._counts_nonfinite = backend.supports("count_nonfinite")
        # Greedy tokens picked in the pass too (then only they are copied to the host), unless
        # the model caps its logits: capping can make two logits equal, which changes the pick.
        self._picks_in_pass = (
            self._counts_nonfinite and backend.supports("argmax_rows") and not cfg.final_softcap
        )
        self._compiles_steps = backend.supports("compile_step")
        # Set by the engine at its first step: from then on a research call frees its thread's
        # kernel workers when it ends (`_research_done`).
        self.engine_has_run = False
        self._release_threads = getattr(backend, "release_threads", None)
        # Programs by what they run and its size, for the KV buffers of `_programs_capacity`.
        self._programs: dict[tuple, StepProgram] = {}
        self._programs_capacity = 0

    # ------------------------------------------------------------------ the engine's step

    def forward(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch through every layer: logits ``(n_logits, n_vocab)`` for its last tokens,
        and for each of their rows whether it is free of NaN and infinities.

        Non-finite logits are returned as they are: the caller fails the sequences they belong
        to (`nonfinite_error` says where they came from) and keeps the others.
        """
        return self._forward(batch, greedy=False)

    def forward_greedy(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """`forward` for a caller that wants only each row's greedy token: ``np.argmax`` of
        each row of the logits `forward` would return (int64 ``[n_logits]``), and whether the
        row is finite. Where the backend picks them in the step (``argmax_rows``) the logits
        are never copied to the host."""
        return self._forward(batch, greedy=True)

    def _forward(self, batch: Batch, greedy: bool) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            self._refuse_closed()
            n = len(batch.ids)
            first = n - batch.n_logits
            by_program = self._runs_programs(n) and batch.n_logits <= self.state.logits.shape[0]
            picks = greedy and self._picks_in_pass and batch.n_logits > 0
            self._begin(batch, embed=not by_program)
            try:
                if by_program:  # the embedding, the layers, the final norm and the projection
                    key = ("forward", n, batch.n_logits, picks)
                    self._run_program(key, lambda: self._whole_pass(first, n, picks))
                    if picks:
                        return self._download_picks(batch.n_logits)
                    logits, finite = self._finish_logits([self._download_logits(batch.n_logits)])
                else:
                    self._layers()
                    if picks:
                        return self._logits(first, n, picks=True)
                    logits, finite = self._logits(first, n)
                return (np.argmax(logits, axis=1), finite) if greedy else (logits, finite)
            finally:
                self._pass = None

    def nonfinite_error(self, batch: Batch) -> NumericalError:
        """`forward` gave non-finite logits for ``batch``: the error naming where they began."""
        with self.lock:
            self._begin(batch)
            try:
                return self._nonfinite_error()
            finally:
                self._pass = None

    # ------------------------------------------------------------------ research: one sequence

    @property
    def tokens(self) -> list[int]:
        """The research sequence whose keys/values the cache holds."""
        return list(self._solo.tokens) if self._solo is not None else []

    def reset(self) -> None:
        """Forget the research sequence (and any pass in progress)."""
        with self.lock:
            if self._solo is not None:
                self.cache.pool.free(self._solo)
                self._solo = None
            self._end_pass()
        self._research_done()

    def eval(self, ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Append ``ids`` to the research sequence and run them.

        Returns float32 logits of shape ``(len(ids), n_vocab)`` when ``all_logits``, else of
        shape ``(1, n_vocab)`` for the last token only.
        """
        ids = self._checked_ids(ids)
        self._check_fits(self._n_solo_tokens() + len(ids))
        out = []
        with self.lock:
            for start in range(0, len(ids), self.n_batch):
                chunk = ids[start : start + self.n_batch]
                last_chunk = start + self.n_batch >= len(ids)
                if last_chunk and not all_logits and self._runs_programs(len(chunk)):
                    self._open_pass(chunk, embed=False)  # the program embeds them
                    out.append(self._finish_last_by_program())
                    continue
                self._open_pass(chunk)
                self._layers()
                if all_logits or last_chunk:
                    out.append(self._finish(all_logits))
                else:
                    self._commit()
        self._research_done()
        return np.concatenate(out) if len(out) > 1 else out[0]

    def truncate(self, n_keep: int) -> None:
        """Keep only the first ``n_keep`` positions of the research sequence."""
        n_keep = check_int("n_keep", n_keep, minimum=0, maximum=len(self.tokens))
        with self.lock:
            if self._solo is not None:
                self.cache.pool.truncate(self._solo, n_keep)

    def embed(self, ids: Sequence[int]) -> None:
        """Start a pass over up to ``n_batch`` tokens that follow the research sequence.

        Writes their embeddings into the residual stream; then call `forward_layer` for each
        layer in order and `finish` for the logits. `residual` reads the stream in between.
        The pass holds ``lock`` (the engine waits) until `finish` or `reset`.

        >>> t = model.transformer                                 # doctest: +SKIP
        >>> t.embed(model.tokenize("Hello"))                      # doctest: +SKIP
        >>> for il in range(model.config.n_layer):                # doctest: +SKIP
        ...     t.forward_layer(il)
        ...     print(il, np.linalg.norm(t.residual(), axis=-1))
        >>> logits = t.finish()                                   # doctest: +SKIP
        """
        ids = self._checked_ids(ids)
        if len(ids) > self.n_batch:
            raise InvalidParameterError(f"embed takes at most n_batch={self.n_batch} tokens, got {len(ids)}")
        self._open_pass(ids)

    def _open_pass(self, ids: list[int], embed: bool = True) -> None:
        """`embed` for checked ids; ``embed=False`` leaves the embedding to the pass's program."""
        self._refuse_closed()
        if not self._pass_holds_lock:
            self.lock.acquire()
            self._pass_holds_lock = True
            self._pass_thread = threading.get_ident()
        try:
            self._pass = None
            if self._solo is None:
                self._solo = self.cache.pool.new_sequence([], share=False)
            self._check_fits(self._solo.n_tokens + len(ids))
            self.cache.pool.reserve(self._solo, self._solo.n_tokens + len(ids))
            self._begin(Batch.one_sequence(self._solo, ids, len(ids)), embed)
        except BaseException:
            self._end_pass()
            raise

    def residual(self) -> np.ndarray:
        """A host copy of the residual stream of the current pass, ``(n_tokens, n_embd)``."""
        return self.backend.download(self.state.x[: self._current().n])

    def finish(self, all_logits: bool = True) -> np.ndarray:
        """End the pass: logits for every token of it (or the last one), and the tokens join the sequence."""
        logits = self._finish(all_logits)
        self._research_done()
        return logits

    def release_caller_threads(self) -> None:
        """Free the calling thread's kernel workers, where the backend keeps them per launching
        thread (`release_threads`; numba on GNU OpenMP): idle beside the engine's own, they
        halved its speed on ``cpu`` (realm_numba/openmp.py). `Engine.submit` calls this; a
        few microseconds when there are none. Safe from any thread, even while a step is being
        recorded: the backend's method was looked up when the model was built."""
        if self._release_threads is not None:
            self._release_threads()

    def _research_done(self) -> None:
        """A research call ended on the caller's thread: once the engine has run (on a thread
        of its own), free that thread's workers. The next research call starts them again
        (0.2-0.4 ms), which research alone never pays."""
        if self.engine_has_run:
            self.release_caller_threads()

    def _finish(self, all_logits: bool) -> np.ndarray:
        n = self._current().n
        try:
            logits = self._checked(*self._logits(0 if all_logits else n - 1, n))
        except BaseException:
            self._end_pass()
            raise
        self._commit()
        return logits

    def _finish_last_by_program(self) -> np.ndarray:
        """For a pass opened without its embedding: the embedding, the layers, the final norm and
        the last token's output projection as one program (the engine's ``forward`` program of
        this size), then what `finish(all_logits=False)` does."""
        n = self._current().n
        try:
            self._run_program(("forward", n, 1, False), lambda: self._whole_pass(n - 1, n))
            logits = self._checked(*self._finish_logits([self._download_logits(1)]))
        except BaseException:
            self._end_pass()
            raise
        self._commit()
        return logits

    def _commit(self) -> None:
        p = self._current()
        table = p.batch.tables[0]
        self.cache.pool.commit(table, table.n_tokens + p.n, p.batch.ids)
        self._end_pass()

    def _end_pass(self) -> None:
        self._pass = None
        if self._pass_holds_lock:
            self._pass_holds_lock = False
            self._pass_thread = None
            self.lock.release()

    def pass_open_in_this_thread(self) -> bool:
        """True between this thread's `embed` and its `finish` or `reset`."""
        return self._pass_thread == threading.get_ident()

    def _check_fits(self, n_positions: int) -> None:
        if n_positions > self.n_ctx:
            raise ContextOverflowError(
                f"{n_positions} positions do not fit in the context of {self.n_ctx} tokens; "
                "shorten the input or load the model with a larger n_ctx"
            )

    # ------------------------------------------------------------------ one pass, step by step

    def _n_solo_tokens(self) -> int:
        return self._solo.n_tokens if self._solo is not None else 0

    def _begin(self, batch: Batch, embed: bool = True) -> None:
        """Make the batch's indices; write its embeddings into the residual stream unless a
        program that starts with them (`_whole_pass`) runs next."""
        be, bs = self.backend, self.cache.block_size
        self.cache.sync()
        # In Python lists, then one array each: a decode step's host time is mostly calls
        # into numpy, each several times slower than here once the step's kernels have run
        # (docs/performance.md), and these are a few tokens.
        blocks = [t.blocks for t in batch.tables]
        width = max(map(len, blocks))
        table = np.array([b + [0] * (width - len(b)) for b in blocks], np.int32)
        slots = [blocks[s][p // bs] * bs + p % bs
                 for s, p in zip(batch.seq_ids.tolist(), batch.positions.tolist(), strict=True)]
        host = PassIndices(
            np.ascontiguousarray(batch.positions),  # a program takes them as they are (dtype checked there)
            np.ascontiguousarray(batch.seq_ids),
            table,
            np.array(slots, np.int32),
            np.array(batch.ids, np.int32),
        )
        self._pass = Pass(batch, host, be)
        if embed:
            self._embed_tokens()

    def _embed_tokens(self) -> None:
        """The pass's token embeddings into the residual stream."""
        p, be = self._current(), self.backend
        x = self.state.x[: p.n]
        be.get_rows(self.w.token_embd, p.device.ids, x)
        if self._embd_scale is not None:
            be.scale(x, self._embd_scale, x)
        self._emit("inp_embd", x)

    def _whole_pass(self, r0: int, r1: int, picks: bool = False) -> None:
        """The embedding, every layer, and rows [r0, r1) through the output projection (and
        each row's argmax, with ``picks``)."""
        self._embed_tokens()
        self._layer_calls()
        if r1 > r0:
            self._project(r0, r1, picks)

    def _layers(self) -> None:
        """Every layer of the current pass: as one program where the backend can, else op by op."""
        n = self._current().n
        if self._runs_programs(n):
            self._run_program(("layers", n), self._layer_calls)
        else:
            self._layer_calls()

    def _layer_calls(self) -> None:
        for il in range(self.cfg.n_layer):
            self.forward_layer(il)

    def _runs_programs(self, n: int) -> bool:
        return self._compiles_steps and n <= STEP_PROGRAM_MAX_TOKENS and self._quiet()

    def _quiet(self) -> bool:
        """No hook or trace reads intermediates: passes may run as programs and fused ops."""
        return not self.hooks and self._watch is None

    def _run_program(self, key: tuple, calls: Callable[[], None]) -> None:
        """Run the program of the backend calls that ``calls()`` makes, recorded on first use.

        Programs hold the KV buffers they were recorded with: they are dropped when those grow.
        """
        p = self._current()
        if self._programs_capacity != self.cache.capacity:
            self._programs.clear()
            self._programs_capacity = self.cache.capacity
        program = self._programs.pop(key, None)  # re-inserted below: the newest at the end
        if program is None:
            recorder = StepRecorder(self.backend)
            backend, self.backend = self.backend, recorder  # the lock is held: no other pass sees this
            try:
                calls()
            finally:
                self.backend = backend
            program = backend.compile_step(recorder.calls, p.device)
            while len(self._programs) >= STEP_PROGRAMS_KEPT:
                del self._programs[next(iter(self._programs))]  # the least recently used
        self._programs[key] = program
        program.run(p.host)

    def _refuse_closed(self) -> None:
        if self.closed:
            raise CallOrderError("the model is closed; load it again to use it")

    def _current(self) -> Pass:
        self._refuse_closed()
        if self._pass is None:
            raise CallOrderError("no pass in progress: call embed(ids) first")
        return self._pass

    def _checked_ids(self, ids: Sequence[int]) -> list[int]:
        return check_token_ids("ids", ids, self.cfg.n_vocab)

    def forward_layer(self, il: int) -> None:
        """Run block ``il`` of the current pass over the residual stream."""
        il = check_int("il", il, minimum=0, maximum=self.cfg.n_layer - 1)
        p = self._current()
        n = p.n
        be, s, cfg, layer = self.backend, self.state, self.cfg, self.w.layers[il]
        x, proj = s.x[:n], s.proj[:n]

        self._attention(il, p)  # of the residual normed by attn_norm
        if layer.get("post_attention_norm") is not None:
            be.rms_norm(proj, layer["post_attention_norm"], cfg.rms_eps, proj)
        self._emit(f"blk.{il}.attn_out", proj)
        be.add(x, proj, x)
        self._emit(f"blk.{il}.ffn_inp", x)

        self._feed_forward(il, n)  # of the residual normed by ffn_norm
        if layer.get("post_ffw_norm") is not None:
            be.rms_norm(proj, layer["post_ffw_norm"], cfg.rms_eps, proj)
        self._emit(f"blk.{il}.ffn_out", proj)
        be.add(x, proj, x)
        self._emit(f"blk.{il}.l_out", x)

    def _attention(self, il: int, p: Pass) -> None:
        be, s, cfg, layer, arch = self.backend, self.state, self.cfg, self.w.layers[il], self.arch
        n, idx = p.n, p.device
        q2, k2, v2 = s.q[:n], s.k[:n], s.v[:n]
        weights = [layer[name] for name in ("attn_q", "attn_k", "attn_v")]
        self._normed_matmuls(s.x[:n], layer["attn_norm"], f"blk.{il}.attn_norm", weights, [q2, k2, v2])
        for name, out in (("attn_q", q2), ("attn_k", k2), ("attn_v", v2)):
            bias = layer.get(f"{name}.bias")
            if bias is not None:
                be.add(out, bias, out)
        q = q2.reshape(n, cfg.n_head, cfg.head_dim_k)
        k = k2.reshape(n, cfg.n_head_kv, cfg.head_dim_k)
        v = v2.reshape(n, cfg.n_head_kv, cfg.head_dim_v)
        if layer.get("attn_q_norm") is not None:
            be.rms_norm(q, layer["attn_q_norm"], cfg.rms_eps, q)
        if layer.get("attn_k_norm") is not None:
            be.rms_norm(k, layer["attn_k_norm"], cfg.rms_eps, k)
        base, freq_scale = arch.layer_rope(il)
        rope = {"freq_factors": self.w.rope_freqs, "freq_scale": freq_scale}
        k_pool, v_pool = self.cache.k[il], self.cache.v[il]
        if self._fuses_rope_kv and self._quiet():
            be.rope_write_kv(q, k, v, idx.positions, cfg.rope_dim, base, arch.rope_mode, k_pool, v_pool,
                             idx.slots, **rope)  # fmt: skip
        else:
            for t in (q, k):
                be.rope(t, idx.positions, cfg.rope_dim, base, arch.rope_mode, t, **rope)
            self._emit(f"blk.{il}.q", q2)
            self._emit(f"blk.{il}.k", k2)
            self._emit(f"blk.{il}.v", v2)
            be.set_rows(k, k_pool, idx.slots)
            be.set_rows(v, v_pool, idx.slots)
        attn = s.attn[:n]
        be.attention_paged(
            q,
            k_pool,
            v_pool,
            idx.block_table,
            self.cache.block_size,
            idx.seq_ids,
            idx.positions,
            self._attn_scale,
            attn.reshape(n, cfg.n_head, cfg.head_dim_v),
            window=arch.layer_window(il),
            softcap=cfg.attn_softcap,
        )
        self._emit(f"blk.{il}.kqv_out", attn)
        self._matmul(attn, layer["attn_output"], s.proj[:n])

    def _matmul(self, x: DeviceArray, w: QuantTensor | DeviceArray, out: DeviceArray) -> None:
        if isinstance(w, QuantTensor) and w.qtype in self._q16_types:
            self.backend.matmul_q16(x, w, out)
        else:
            self.backend.matmul(x, w, out)

    def _normed_matmuls(self, x: DeviceArray, norm: DeviceArray, name: str | None, ws: list,
                        outs: list[DeviceArray], gated: str | None = None) -> bool:
        """The matmuls of ``rms_norm(x, norm)`` (the intermediate ``name``): one fused call where
        the backend folds the norm into their rounding and no hook reads the normed rows,
        else the norm into ``xn`` and the matmuls of it. The fused call also runs the
        ``gated`` activation of its two outputs; True when it did."""
        eps = self.cfg.rms_eps
        if self._quiet() and all(isinstance(w, QuantTensor) and w.qtype in self._norm_groups for w in ws):
            self.backend.rms_norm_matmuls_q16(x, norm, eps, ws, outs, gated=gated)
            return gated is not None
        xn = self.state.xn[: x.shape[0]]
        self.backend.rms_norm(x, norm, eps, xn)
        if name is not None:
            self._emit(name, xn)
        self._matmuls(xn, ws, outs)
        return False

    def _matmuls(self, x: DeviceArray, ws: list, outs: list[DeviceArray]) -> None:
        if all(isinstance(w, QuantTensor) and w.qtype in self._q16_groups for w in ws):
            self.backend.matmuls_q16(x, ws, outs)
        else:
            for w, out in zip(ws, outs, strict=True):
                self._matmul(x, w, out)

    def _feed_forward(self, il: int, n: int) -> None:
        be, s, layer = self.backend, self.state, self.w.layers[il]
        gate, up = s.gate[:n], s.up[:n]
        weights, act = [layer["ffn_gate"], layer["ffn_up"]], self.arch.ffn_activation
        if not self._normed_matmuls(s.x[:n], layer["ffn_norm"], None, weights, [gate, up], gated=act):
            getattr(be, act)(gate, up, gate)
            self._emit(f"blk.{il}.ffn_act", gate)
        self._matmul(gate, layer["ffn_down"], s.proj[:n])

    def _logits(self, row_start: int, row_stop: int, picks: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Final norm and output projection for rows [row_start, row_stop) of the pass: the
        logits (with ``picks``, each row's argmax instead), and whether each row is finite."""
        step = self.state.logits.shape[0]
        parts = []
        for r0 in range(row_start, row_stop, step):
            r1 = min(r0 + step, row_stop)
            self._project(r0, r1, picks)
            parts.append(self._download_picks(r1 - r0) if picks else self._download_logits(r1 - r0))
        if picks:
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return self._finish_logits(parts)

    def _project(self, r0: int, r1: int, picks: bool = False) -> None:
        """Rows [r0, r1) of the pass through the final norm and the output projection, into
        the first rows of the logits buffer (and their count of non-finite values where the
        backend counts them; with ``picks``, each row's argmax)."""
        s = self.state
        logits = s.logits[: r1 - r0]
        self._normed_matmuls(s.x[r0:r1], self.w.output_norm, "result_norm", [self.w.output], [logits])
        if self._counts_nonfinite:
            self.backend.count_nonfinite(logits, s.nonfinite[: r1 - r0])
        if picks:
            self.backend.argmax_rows(logits, s.picks[: r1 - r0])

    def _download_logits(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """A host copy of the first ``n_rows`` of the logits buffer, and whether each is finite."""
        logits = self.backend.download(self.state.logits[:n_rows])
        if self._counts_nonfinite:
            return logits, self.backend.download(self.state.nonfinite[:n_rows]) == 0
        return logits, finite_rows(logits)

    def _download_picks(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n_rows`` of the step's picks (int64), and whether each row was finite."""
        be, s = self.backend, self.state
        return be.download(s.picks[:n_rows]).astype(np.int64), be.download(s.nonfinite[:n_rows]) == 0

    def _finish_logits(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """The parts' logits as one array, capped where the model caps them, and their rows' finiteness."""
        if len(parts) == 1:
            out, finite = parts[0]
        else:
            out = np.concatenate([np.empty((0, self.cfg.n_vocab), np.float32), *(p[0] for p in parts)])
            finite = np.concatenate([np.empty(0, bool), *(p[1] for p in parts)])
        if self.cfg.final_softcap:
            out = self.cfg.final_softcap * np.tanh(out / self.cfg.final_softcap)
        return out, finite

    def _checked(self, logits: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """``logits``, or the error naming where the pass went non-finite."""
        if not finite.all():
            raise self._nonfinite_error()
        return logits

    def _nonfinite_error(self) -> NumericalError:
        """The error for non-finite logits, naming the first intermediate that went non-finite.

        Finding it costs one more run of the pass with every intermediate copied to the host,
        paid only on this failure path. The chunk's keys and values are rewritten as they were.
        """
        p = self._current()
        seen: list[str] = []

        def watch(name: str, host: np.ndarray) -> None:
            if not seen and not np.isfinite(host).all():
                seen.append(name)

        self._watch = watch
        try:
            self._begin(p.batch)
            for il in range(self.cfg.n_layer):
                self.forward_layer(il)
                if seen:
                    break
        finally:
            self._watch = None
        where = f"first at {seen[0]!r}" if seen else "in the output projection"
        hooks = " or a research hook returned them" if self.hooks else ""
        positions = p.batch.positions
        return NumericalError(
            f"the forward pass produced NaN or infinite values ({where}) for the {p.n} tokens "
            f"at positions {positions.min()}..{positions.max()}: the model's weights are corrupt{hooks}; "
            "realm does not sample from such logits"
        )

    # ------------------------------------------------------------------ research hooks

    def _emit(self, name: str, tensor: DeviceArray) -> None:
        if not self.hooks and self._watch is None:
            return
        hook = self.hooks.get(name) or self.hooks.get("*")
        if hook is None and self._watch is None:
            return
        host = self.backend.download(tensor)
        replacement = hook(name, host) if hook is not None else None
        if replacement is not None:
            replacement = np.ascontiguousarray(replacement, dtype=np.float32)
            if replacement.shape != host.shape:
                raise InvalidParameterError(
                    f"hook for {name!r} returned shape {replacement.shape}, expected {host.shape}"
                )
            self.backend.copy_rows(self.backend.upload(replacement), tensor, 0)
            host = replacement
        if self._watch is not None:
            self._watch(name, host)
