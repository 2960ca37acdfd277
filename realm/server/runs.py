"""Running a request's choices on a model's engine, for the HTTP layer.

Each choice is its own engine request, so ``n`` choices decode together in the engine's
batched steps. `merged_pieces` reads every choice's stream from the server's event loop
(one wake-up per engine step, however many requests got a token); `cancel_unfinished` frees
the KV blocks of choices nobody will read (a client that went away) without blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from realm.engine.request import Request, RequestHandle
from realm.generate import SamplingParams
from realm.server.schemas import _Sampling


def sampling_params(body: _Sampling, choice: int) -> SamplingParams:
    """realm's sampling parameters for one choice; fields left out take realm's defaults.

    With a seed, choice ``i`` uses ``seed + i``: the choices of one request must differ, and
    the same request must give the same choices again.
    """
    defaults = SamplingParams()
    given = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
    }
    fields = {name: getattr(defaults, name) if value is None else value for name, value in given.items()}
    seed = None if body.seed is None else body.seed + choice
    return SamplingParams(
        **fields,
        repeat_last_n=defaults.repeat_last_n,
        seed=seed,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
    )


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def submit_choices(
    engine,
    prompts: Sequence[list[int]],
    body: _Sampling,
    max_tokens: Sequence[int],
    keep_logits: bool = False,
) -> list[RequestHandle]:
    """Submit ``body.n`` requests per prompt (choice ``p * n + j``); on a refusal, the ones
    already submitted are cancelled before the error goes on."""
    handles: list[RequestHandle] = []
    try:
        for p, ids in enumerate(prompts):
            for j in range(body.n):
                index = p * body.n + j
                request = Request(
                    ids,
                    sampling_params(body, index),
                    max_tokens[p],
                    stop=stop_strings(body.stop),
                    if_full="wait",
                    keep_logits=keep_logits,
                )
                handles.append(engine.submit(request))
    except BaseException:
        for handle in handles:
            handle.cancel()
        raise
    return handles


async def merged_pieces(handles: Sequence[RequestHandle]) -> AsyncIterator[tuple[int, str | None, int]]:
    """``(choice, text piece, position)`` in the order the pieces arrive, ``position`` being the
    piece's token in ``handle.tokens``; ``(choice, None, -1)`` when a choice ends. A choice's
    error is raised here."""
    queue: asyncio.Queue[tuple[int, str | None | BaseException, int]] = asyncio.Queue()

    async def pump(index: int, handle: RequestHandle) -> None:
        try:
            async for piece in handle:
                queue.put_nowait((index, piece, len(handle.tokens) - 1))
            queue.put_nowait((index, None, -1))
        except Exception as exc:  # handed to the reader, raised there
            queue.put_nowait((index, exc, -1))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        remaining = len(handles)
        while remaining:
            index, item, position = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                remaining -= 1
            yield index, item, position
    finally:
        for task in tasks:
            task.cancel()


def cancel_unfinished(handles: Sequence[RequestHandle]) -> None:
    """Cancel every choice still running, from a worker thread (`RequestHandle.cancel` waits for
    the engine step in flight, and the event loop must not)."""
    unfinished = [h for h in handles if h.finish_reason is None and not h.done.is_set()]
    if not unfinished:
        return
    loop = None
    with contextlib.suppress(RuntimeError):
        loop = asyncio.get_running_loop()
    for handle in unfinished:
        if loop is None:
            handle.cancel()
        else:
            loop.run_in_executor(None, handle.cancel)
