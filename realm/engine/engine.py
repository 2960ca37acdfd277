"""The engine: many sequences decoded together in batched steps, on one worker thread.

Read top to bottom, a step is::

    batch = schedule()               # one decode token per running sequence, then prompt chunks
    logits, finite = forward(batch)  # one pass through the layers: each weight read once per step
    for each sequence:
        commit its new keys/values; sample (prefill done) or keep its logits (all_logits);
        fail it if its logits are not finite

Callers `submit` requests from any thread (or an asyncio loop) and read their handles; only
the worker touches the backend. Chunked prefill (vLLM, llama.cpp's server): decode tokens go
first, then prompts fill what is left of the ``n_batch`` token budget, so a long prompt does
not stall the streams already running.

When the KV pool cannot give a running sequence its next block, the most recently admitted
other sequence is *preempted*: its blocks are freed and it goes back to the front of the
queue with its generated tokens, to be recomputed later (vLLM's recompute preemption; its
full blocks usually come straight back from the prefix cache). On ``cpu`` its output is the
same as if it had never been preempted, since each row's arithmetic does not depend on the
batch. Nothing is evicted silently: a request that can never fit is refused at `submit`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from realm.arguments import check_int, check_token_ids
from realm.engine.blocks import BlockPool, BlockTable, PoolFullError
from realm.engine.request import Request, RequestHandle, Wakeups, _Event
from realm.errors import CallOrderError, ContextOverflowError, InvalidParameterError, ModelBusyError
from realm.generate import Sampler, TextAssembler
from realm.model.passes import Batch
from realm.model.transformer import Transformer
from realm.tokenizer import Tokenizer

DEFAULT_N_SEQ_MAX = 32
IDLE_WAIT_SECONDS = 0.05  # how often a queue that cannot be admitted is looked at again


@dataclass(eq=False)
class _Sequence:
    """The worker's state of one request."""

    handle: RequestHandle
    ids: list[int]  # prompt, then every generated token; keys/values exist for table.n_tokens of them
    sampler: Sampler
    text: TextAssembler
    table: BlockTable | None = None  # None while waiting
    logits_parts: list[np.ndarray] = field(default_factory=list)
    n_generated: int = 0
    inflight: list[int] = field(default_factory=list)  # prompt block hashes this sequence is computing
    admitted: bool = False  # ran before (a preempted sequence waits for room whatever if_full says)
    hashes: list[int] = field(default_factory=list)  # prefix_hashes' result, for hashed_len ids
    hashed_len: int = -1

    @property
    def wants_argmax_only(self) -> bool:
        """Its next token is the argmax of its logits, and nothing else of them is kept."""
        req = self.request
        return self.sampler.draws_argmax and not req.all_logits and not req.keep_logits

    def prefix_hashes(self, pool: BlockPool) -> list[int]:
        """`BlockPool.prompt_hashes` of ``ids``, computed once: the queue is looked at every
        step, and a waiting sequence's ids change only when a preempted one re-joins it."""
        if self.hashed_len != len(self.ids):
            self.hashes, self.hashed_len = pool.prompt_hashes(self.ids), len(self.ids)
        return self.hashes

    @property
    def request(self) -> Request:
        return self.handle.request

    @property
    def n_pending(self) -> int:
        """Tokens whose keys/values are still to be computed."""
        return len(self.ids) - (self.table.n_tokens if self.table else 0)


@dataclass
class _Scheduled:
    seq: _Sequence
    start: int  # first position of the chunk
    count: int
    logits_rows: slice = field(default_factory=lambda: slice(0, 0))  # its rows of the step's logits

    @property
    def has_logits(self) -> bool:
        return self.logits_rows.stop > self.logits_rows.start


class Engine:
    """Runs requests on a `Transformer` in batched steps.

    ``n_seq_max`` sequences run at once at most (further requests wait in the queue, which
    holds ``max_waiting`` at most: past that `submit` raises `ModelBusyError`).
    """

    def __init__(
        self,
        transformer: Transformer,
        tokenizer: Tokenizer,
        n_seq_max: int | None = None,
        max_waiting: int | None = None,
    ) -> None:
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.pool = transformer.cache.pool
        if n_seq_max is None:
            self.n_seq_max = min(DEFAULT_N_SEQ_MAX, transformer.n_batch)
        else:
            self.n_seq_max = check_int(
                "n_seq_max",
                n_seq_max,
                minimum=1,
                maximum=transformer.n_batch,
                hint=" (a step runs at most n_batch tokens, one per decoding sequence)",
            )
        self.max_waiting = check_int("max_waiting", max_waiting, minimum=0, allow_none=True)
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self._cancelled: set[RequestHandle] = set()
        self._inflight: dict[int, _Sequence] = {}  # prompt block hash -> the sequence computing it
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.steps = 0  # engine steps run, for tests and metrics
        self.prefix_hit_tokens = 0  # prompt tokens whose keys/values came from the prefix cache
        self.prefix_query_tokens = 0  # prompt tokens looked up there (admissions, re-admissions too)
        self.preemptions = 0
        self._wakeups: Wakeups | None = None  # set while a step's results are handed out

    # ------------------------------------------------------------------ callers

    def submit(self, request: Request) -> RequestHandle:
        """Queue a request; its handle streams the result. Any thread may call this."""
        if not isinstance(request, Request):
            raise InvalidParameterError(
                f"submit takes a realm.engine.request.Request, got {type(request).__name__}"
            )
        if not request.ids:
            raise InvalidParameterError("the prompt is empty: give at least one token")
        check_token_ids("ids", request.ids, self.transformer.cfg.n_vocab)
        if self.transformer.pass_open_in_this_thread():  # the step would wait for it forever
            raise CallOrderError(
                "this thread has a research pass open (transformer.embed without finish); call "
                "transformer.finish() or transformer.reset() before submitting requests"
            )
        n_ctx = self.transformer.n_ctx
        need = len(request.ids) + request.max_tokens
        if need > n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(request.ids)} tokens) + max_tokens ({request.max_tokens}) exceeds the "
                f"context of {n_ctx} tokens; shorten the prompt, lower max_tokens, or load the model "
                "with a larger n_ctx"
            )
        if self.pool.blocks_needed(need) > self.pool.n_blocks:
            raise PoolFullError(
                f"a request of {need} positions can never fit in the KV pool of "
                f"{self.pool.n_blocks * self.pool.block_size} positions; load the model with a larger kv_size"
            )
        # The caller may have run the model itself (the research API runs on its thread).
        self.transformer.release_caller_threads()
        handle = RequestHandle(request, self.cancel)
        seq = _Sequence(
            handle,
            list(request.ids),
            Sampler(request.params),
            TextAssembler(lambda t: self.tokenizer.token_to_bytes(t, special=False), request.stop),
        )
        with self._cond:
            if self._closed:
                raise CallOrderError("the engine is closed; load the model again to use it")
            # requests the next step will admit (free sequence slots) do not count as waiting
            queued = len(self.waiting) - max(0, self.n_seq_max - len(self.running))
            if self.max_waiting is not None and queued >= self.max_waiting:
                raise ModelBusyError(
                    f"{queued} requests are already waiting (max_waiting={self.max_waiting}); retry later"
                )
            self.waiting.append(seq)
            self._start_worker()
            self._cond.notify_all()
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        """Stop a request; when this returns its blocks are back in the pool."""
        with self._cond:
            if handle.done.is_set():
                return
            for seq in self.waiting:
                if seq.handle is handle:
                    self.waiting.remove(seq)
                    self._end(seq, _Event(finish_reason="cancelled"))
                    return
            self._cancelled.add(handle)
            self._cond.notify_all()
        if threading.current_thread() is not self._worker:
            handle.done.wait()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Cancel everything and stop the worker."""
        with self._cond:
            self._closed = True
            for seq in list(self.waiting):
                self.waiting.remove(seq)
                self._end(seq, _Event(finish_reason="cancelled"))
            self._cancelled.update(s.handle for s in self.running)
            worker = self._worker
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    # ------------------------------------------------------------------ the worker

    def _start_worker(self) -> None:
        """(Under the lock.) The worker runs while there is work and exits when there is none."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="realm-engine", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._drop_cancelled()
                if not self.waiting and not self.running:
                    self._worker = None
                    return
            try:
                stepped = self.step()
            except BaseException as exc:  # an engine bug: every reader gets it, none hangs
                with self._cond:
                    for seq in [*self.running, *self.waiting]:
                        self._end(seq, _Event(error=exc))
                    self.waiting.clear()
                    self._worker = None
                return
            if not stepped:
                with self._cond:
                    self._cond.wait(IDLE_WAIT_SECONDS)

    def step(self) -> bool:
        """Run one batched step; False when nothing could be scheduled."""
        with self.transformer.lock:
            with self._cond:
                self._drop_cancelled()
                plan = self._schedule()
            if not plan:
                return False
            batch = self._batch(plan)
            # Only the greedy tokens leave the step when every sequence with logits wants no more.
            greedy = all(item.seq.wants_argmax_only for item in plan if item.has_logits)
            try:
                run = self.transformer.forward_greedy if greedy else self.transformer.forward
                rows, finite = run(batch)
            except Exception as exc:  # a hook or the backend failed: those requests fail, not the engine
                with self._cond:
                    for item in plan:
                        self._end(item.seq, _Event(error=exc))
                return True
            self.steps += 1
            self.transformer.engine_has_run = True
            with self._cond:
                self._wakeups = Wakeups()  # asyncio readers are woken once per loop, after the step
                try:
                    self._after_step(plan, batch, rows, finite, greedy)
                finally:
                    wakeups, self._wakeups = self._wakeups, None
            wakeups.fire()
        return True

    # ------------------------------------------------------------------ scheduling

    def _schedule(self) -> list[_Scheduled]:
        """(Under the lock.) This step's chunks: decodes first, then prompts within the budget."""
        self._make_room()
        budget = self.transformer.n_batch
        one_sequence = bool(self.transformer.hooks)  # hooks see one sequence's tensors at a time
        plan: list[_Scheduled] = []
        # decode tokens first (one each, so streams never stall), then prompt chunks, oldest first
        for seq in sorted(self.running, key=lambda s: s.n_pending != 1):
            count = min(seq.n_pending, budget)
            if count == 0 or (one_sequence and plan):
                continue
            assert seq.table is not None
            plan.append(_Scheduled(seq, seq.table.n_tokens, count))
            budget -= count
        while self.waiting and budget > 0 and len(self.running) < self.n_seq_max:
            if one_sequence and plan:
                break
            seq = self._admit_next(share=not one_sequence)
            if seq is None:
                break
            assert seq.table is not None
            count = min(seq.n_pending, budget)
            plan.append(_Scheduled(seq, seq.table.n_tokens, count))
            budget -= count
        return plan

    def _make_room(self) -> None:
        """Blocks for every known token of every running sequence, preempting if the pool is out.

        A prompt's blocks come with its admission, so only a decode token that starts a new
        block needs one here. Sequences are served oldest first; when the pool has none left,
        the newest other running sequence is preempted, or this one if it is the newest
        (vLLM's order). A sequence alone that cannot get a block fails with `PoolFullError`.
        """
        for seq in list(self.running):
            while seq in self.running:
                assert seq.table is not None
                try:
                    self.pool.reserve(seq.table, len(seq.ids))
                    break
                except PoolFullError as exc:
                    if len(self.running) == 1:
                        self._end(seq, _Event(error=exc))
                    else:
                        self._preempt(self.running[-1])

    def _preempt(self, seq: _Sequence) -> None:
        assert seq.table is not None
        self.preemptions += 1
        self.pool.free(seq.table)
        seq.table = None
        seq.logits_parts.clear()
        self._forget_inflight(seq)
        self.running.remove(seq)
        self.waiting.appendleft(seq)

    def _admit_next(self, share: bool) -> _Sequence | None:
        """Move the first waiting request that can start into the running set, if any."""
        for seq in list(self.waiting):
            req = seq.request
            share_seq = share and not req.all_logits  # every position's logits are computed anew
            hashes = seq.prefix_hashes(self.pool) if share_seq else []
            n_cached = self.pool.n_cached_blocks(hashes)
            if n_cached < len(hashes) and hashes[n_cached] in self._inflight:
                continue  # another sequence is computing this prefix: take its blocks next step
            try:
                seq.table = self.pool.new_sequence(seq.ids, share=share_seq)
            except PoolFullError as exc:
                if req.if_full == "raise" and not seq.admitted:
                    self.waiting.remove(seq)
                    self._end(seq, _Event(error=exc))
                    continue
                return None  # first come, first served: later requests wait behind it
            self.waiting.remove(seq)
            self.running.append(seq)
            if not seq.admitted:
                seq.handle.admitted_at = time.perf_counter()
            seq.admitted = True
            seq.handle.n_cached = seq.table.n_cached
            self.prefix_hit_tokens += seq.table.n_cached
            self.prefix_query_tokens += len(seq.ids)
            seq.inflight = [h for h in hashes[n_cached:] if h not in self._inflight]
            for h in seq.inflight:
                self._inflight[h] = seq
            return seq
        return None

    def _batch(self, plan: list[_Scheduled]) -> Batch:
        """The step's tokens: rows without logits first, then the rows whose logits are needed."""
        body: list[tuple[int, int, int]] = []  # (token, position, sequence index)
        tail: list[tuple[int, int, int]] = []
        for i, item in enumerate(plan):
            seq = item.seq
            rows = [(seq.ids[p], p, i) for p in range(item.start, item.start + item.count)]
            done = item.start + item.count == len(seq.ids)
            n_logits = item.count if seq.request.all_logits else int(done)
            cut = len(rows) - n_logits
            body.extend(rows[:cut])
            item.logits_rows = slice(len(tail), len(tail) + n_logits)
            tail.extend(rows[cut:])
        rows = body + tail
        return Batch(
            ids=[r[0] for r in rows],
            positions=np.array([r[1] for r in rows], np.int32),
            seq_ids=np.array([r[2] for r in rows], np.int32),
            tables=[item.seq.table for item in plan],  # type: ignore[misc]
            n_logits=len(tail),
        )

    # ------------------------------------------------------------------ after a step

    def _after_step(self, plan: list[_Scheduled], batch: Batch, rows_out: np.ndarray,
                    finite: np.ndarray, greedy: bool) -> None:
        """(Under the lock.) Record the new keys/values, then sample or collect logits.

        ``rows_out``: the step's rows of logits, or with ``greedy`` each row's argmax;
        ``finite``: whether each row of logits is free of NaN and infinities."""
        error = None
        every_row_finite = bool(finite.all())  # one test for the whole step; row by row only if not
        for item in plan:
            seq = item.seq
            assert seq.table is not None
            end = item.start + item.count
            self.pool.commit(seq.table, end, seq.ids[item.start : end])
            if end >= len(seq.request.ids):
                self._forget_inflight(seq)
            rows = rows_out[item.logits_rows]
            if not (every_row_finite or finite[item.logits_rows].all()):
                if error is None:
                    error = self.transformer.nonfinite_error(batch)
                self._end(seq, _Event(error=error))
            elif seq.handle in self._cancelled:
                continue  # dropped at the start of the next step
            elif seq.request.all_logits:
                seq.logits_parts.append(rows)
                if end == len(seq.ids):
                    self._end(seq, _Event(finish_reason="stop", logits=np.concatenate(seq.logits_parts)))
            elif len(rows) and greedy:
                self._append(seq, int(rows[-1]), None)
            elif len(rows):
                self._sample(seq, rows[-1])

    def _sample(self, seq: _Sequence, logits: np.ndarray) -> None:
        try:
            token = seq.sampler(logits, seq.ids)
        except Exception as exc:
            self._end(seq, _Event(error=exc))
            return
        self._append(seq, token, logits)

    def _append(self, seq: _Sequence, token: int, logits: np.ndarray | None) -> None:
        """The sequence's next token (``logits``: the row it was drawn from, if the step kept it)."""
        if token in self.tokenizer.eot_ids and not seq.request.ignore_eos:
            self._finish(seq, "stop")
            return
        seq.ids.append(token)
        seq.n_generated += 1
        kept = None
        if seq.request.keep_logits:
            if logits is None:  # `wants_argmax_only` keeps such a sequence out of greedy steps
                raise CallOrderError("a keep_logits request got a token without its logits (an engine bug)")
            kept = logits.copy()
        seq.handle._push(_Event(piece=seq.text.push(token), token=token, token_logits=kept), self._wakeups)
        if seq.text.stopped:
            self._end(seq, _Event(finish_reason="stop"))
        elif seq.n_generated >= seq.request.max_tokens:
            self._finish(seq, "length")

    def _finish(self, seq: _Sequence, reason: str) -> None:
        tail = seq.text.flush()
        if tail:
            seq.handle._push(_Event(piece=tail), self._wakeups)
        self._end(seq, _Event(finish_reason=reason))

    def _end(self, seq: _Sequence, last: _Event) -> None:
        """(Under the lock.) The request is over: free its blocks, then tell its reader."""
        if seq.table is not None:
            self.pool.free(seq.table)
            seq.table = None
        self._forget_inflight(seq)
        if seq in self.running:
            self.running.remove(seq)
        self._cancelled.discard(seq.handle)
        seq.handle._push(last, self._wakeups)
        seq.handle.done.set()

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.running if s.handle in self._cancelled]:
            self._end(seq, _Event(finish_reason="cancelled"))

    def _forget_inflight(self, seq: _Sequence) -> None:
        for h in seq.inflight:
            if self._inflight.get(h) is seq:
                del self._inflight[h]
        seq.inflight = []
