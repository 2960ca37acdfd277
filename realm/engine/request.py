"""A request to the engine, and the handle its caller reads the result from.

The engine's worker thread appends events to the handle; the caller reads them from any
thread (iteration blocks) or from an asyncio loop (``async for``), and may cancel at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from realm.arguments import check_bool, check_int, check_stop, check_token_ids
from realm.errors import CallOrderError, InvalidParameterError
from realm.generate import SamplingParams

IfFull = Literal["wait", "raise"]
DEFAULT_MAX_TOKENS = 256
MAX_TOKEN_ID = 2**31 - 1  # ids are int32 on the device; the vocabulary is checked by submit


@dataclass(frozen=True)
class Request:
    """What to run: a prompt's token ids and how to continue it.

    ``max_tokens`` (>= 1; None means 256) tokens are generated at most. ``all_logits`` asks
    instead for the logits at every prompt position: nothing is sampled, and ``max_tokens``
    must be None or 0. ``stop``: a string or a sequence of non-empty strings.
    ``if_full`` says what happens when the KV pool cannot hold the prompt now: ``"wait"``
    until running requests free blocks, or ``"raise"`` `PoolFullError` from the handle.
    ``ignore_eos`` generates past end-of-generation tokens, always ``max_tokens`` of them
    (benchmarks). ``keep_logits`` keeps, for each generated token, the logits it was sampled from
    (``RequestHandle.token_logits``; log-probabilities are computed from them).
    """

    ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    all_logits: bool = False
    if_full: IfFull = "wait"
    keep_logits: bool = False
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        """Check every field where it enters; `Engine.submit` checks the ids against the vocabulary."""
        put = functools.partial(object.__setattr__, self)
        put("ids", check_token_ids("ids", self.ids, MAX_TOKEN_ID, allow_empty=True))
        if not isinstance(self.params, SamplingParams):
            raise InvalidParameterError(
                f"params must be a realm.SamplingParams, got {type(self.params).__name__}"
            )
        for name in ("all_logits", "keep_logits", "ignore_eos"):
            put(name, check_bool(name, getattr(self, name)))
        if self.all_logits:
            if self.max_tokens not in (None, 0) or isinstance(self.max_tokens, bool):
                raise InvalidParameterError(
                    f"max_tokens must be None or 0 for an all_logits request (nothing is generated), "
                    f"got {self.max_tokens!r}"
                )
            put("max_tokens", 0)
        elif self.max_tokens is None:
            put("max_tokens", DEFAULT_MAX_TOKENS)
        else:
            put("max_tokens", check_int("max_tokens", self.max_tokens, minimum=1))
        put("stop", tuple(check_stop(self.stop)))
        if not isinstance(self.if_full, str) or self.if_full not in ("wait", "raise"):
            raise InvalidParameterError(f"if_full must be 'wait' or 'raise', got {self.if_full!r}")


@dataclass
class _Event:
    """One step of a request's progress; the last one has a finish_reason or an error."""

    piece: str = ""  # text that became safe to show
    token: int | None = None  # the generated token this event adds, if any
    token_logits: np.ndarray | None = None  # what it was sampled from, when the request keeps them
    finish_reason: str | None = None  # set on the last event
    logits: np.ndarray | None = None  # an all_logits request's result, on its last event
    error: BaseException | None = None  # the request failed; raised to the reader


class RequestHandle:
    """The caller's side of a submitted request.

    Iterate it (or ``async for``) for the text pieces as they are generated; afterwards
    ``tokens``, ``text`` and ``finish_reason`` (``"stop"``, ``"length"`` or ``"cancelled"``)
    hold the result. ``cancel()`` stops it and frees its KV blocks before it returns.
    """

    def __init__(self, request: Request, cancel: Callable[[RequestHandle], None]) -> None:
        self.request = request
        self.tokens: list[int] = []
        self.token_logits: list[np.ndarray] = []  # with Request.keep_logits: one row per token
        self.text = ""
        self.finish_reason: str | None = None
        self.n_cached = 0  # prompt tokens whose keys/values came from the prefix cache
        self.submitted_at = time.perf_counter()
        self.admitted_at: float | None = None  # when a step first ran it (perf_counter)
        self._logits: np.ndarray | None = None  # an all_logits request's result
        self._cancel = cancel
        self._events: deque[_Event] = deque()
        self._cond = threading.Condition()
        # asyncio readers waiting for an event: (their loop, the future that wakes them)
        self._wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.done = threading.Event()  # set once the request is over and its blocks are free

    @property
    def n_prompt(self) -> int:
        return len(self.request.ids)

    # ------------------------------------------------------------------ the worker's side

    def _push(self, event: _Event, wakeups: Wakeups | None = None) -> None:
        """Add an event; asyncio readers are woken now, or by ``wakeups.fire()`` when given."""
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
            wakers, self._wakers = self._wakers, []
        batch = wakeups if wakeups is not None else Wakeups()
        for loop, future in wakers:
            batch.add(loop, future)
        if wakeups is None:
            batch.fire()

    # ------------------------------------------------------------------ the caller's side

    def cancel(self) -> None:
        """Stop the request; its KV blocks are free when this returns (after the step in flight:
        from asyncio code, run it in an executor). Leaving a ``for`` loop over the handle
        does not cancel it: the handle, not the loop, owns the request."""
        self._cancel(self)
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def __iter__(self) -> Iterator[str]:
        while True:
            with self._cond:
                while not self._events:
                    self._cond.wait()
                event = self._events.popleft()
            piece = self._read(event)
            if piece is None:
                return
            if piece:
                yield piece

    async def _next_event(self) -> _Event:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._events:
                    return self._events.popleft()
                ready = loop.create_future()
                self._wakers.append((loop, ready))
            await ready

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            piece = self._read(await self._next_event())
            if piece is None:
                return
            if piece:
                yield piece

    def result(self) -> str:
        """Wait for the whole text."""
        for _ in self:
            pass
        return self.text

    def logits(self) -> np.ndarray:
        """Wait for an ``all_logits`` request's logits, ``(len(ids), n_vocab)``."""
        if not self.request.all_logits:
            raise CallOrderError("logits() is for requests submitted with all_logits=True")
        for _ in self:
            pass
        assert self._logits is not None
        return self._logits

    def _read(self, event: _Event) -> str | None:
        """Apply one event: its text piece, or None when the request is over."""
        if event.error is not None:
            self.finish_reason = "error"
            self._events.appendleft(event)  # reading again raises again
            raise event.error
        if event.finish_reason is not None:
            self.finish_reason = event.finish_reason
            self._logits = event.logits
            self._events.appendleft(event)  # reading again ends again
            return None
        if event.token is not None:
            self.tokens.append(event.token)
        if event.token_logits is not None:
            self.token_logits.append(event.token_logits)
        self.text += event.piece
        return event.piece


class Wakeups:
    """asyncio readers to wake, gathered over an engine step and woken with one call per loop.

    Each wake-up of a reader's thread costs the step in flight: on a machine whose cores all
    run the kernels, the woken thread takes a core from them. So the engine wakes each event
    loop once per step, whatever number of its requests got a token.
    """

    def __init__(self) -> None:
        self._futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self._futures.setdefault(loop, []).append(future)

    def fire(self) -> None:
        futures, self._futures = self._futures, {}
        for loop, waiting in futures.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_set_all, waiting)


def _set_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
