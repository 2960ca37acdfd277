"""One HTTP request's choices on the engine: submitted together, read together, cancelled
together when the client goes away; and the server-sent-event response that streams them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from realm.errors import RealmError
from realm.server.errors import APIError, from_realm_error
from realm.server.metrics import Metrics
from realm.server.registry import ServedModel
from realm.server.responses import finish_reason, sse, with_done
from realm.server.runs import cancel_unfinished, merged_pieces, submit_choices
from realm.server.schemas import _Sampling


class Run:
    """The choices of one request (``body.n`` per prompt), each its own engine request."""

    def __init__(
        self,
        served: ServedModel,
        metrics: Metrics,
        prompts: list[list[int]],
        body: _Sampling,
        limits: list[int],
        keep_logits: bool = False,
    ) -> None:
        self.served = served
        self.n_prompt = sum(len(p) for p in prompts)
        self.n = len(prompts) * body.n
        self.stats = metrics.request(served.id, served.backend, self.n_prompt)
        self.metrics = metrics
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.handles = []
        if all(limit == 0 for limit in limits):  # nothing to generate (max_tokens=0)
            return
        try:
            self.handles = submit_choices(served.model.engine, prompts, body, limits, keep_logits)
        except RealmError as exc:
            raise from_realm_error(exc) from exc

    @property
    def n_generated(self) -> int:
        return sum(len(h.tokens) for h in self.handles)

    def finish_reason(self, choice: int) -> str:
        return finish_reason(self.handles[choice].finish_reason) if self.handles else "length"

    async def pieces(self) -> AsyncIterator[tuple[int, str | None, int]]:
        """`merged_pieces` of the choices, recording the request's metrics (a choice cut short,
        by a client that went away or an error, counts as finished for reason ``abort``)."""
        try:
            async for index, piece, position in merged_pieces(self.handles):
                if piece is not None:
                    handle = self.handles[index]
                    if index not in self.stats.last and handle.admitted_at is not None:
                        self.stats.queued(handle.admitted_at - handle.submitted_at)
                    self.stats.token(index)
                yield index, piece, position
        finally:
            cancel_unfinished(self.handles)
            self.stats.finish(
                h.finish_reason if h.finish_reason in ("stop", "length") else "abort" for h in self.handles
            )

    async def texts(self) -> list[str]:
        """Every choice's whole text."""
        texts = [""] * self.n
        async for index, piece, _ in self.pieces():
            if piece:
                texts[index] += piece
        return texts

    async def collect(self, request: Request) -> list[str]:
        """`texts`, unless the client disconnects first: then the choices are cancelled."""
        return await until_done_or_gone(self.texts(), request, self.handles)


async def until_done_or_gone(work, request: Request, handles):
    """Await `work` and return its result; if the client closes the connection first, cancel
    `handles` and give up."""
    task = asyncio.ensure_future(work)
    gone = asyncio.create_task(_disconnected(request))
    done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:  # nobody will read the answer
        task.cancel()
        cancel_unfinished(handles)
        raise APIError(499, "client closed the request", code="client_closed_request")
    gone.cancel()
    try:
        return task.result()
    except RealmError as exc:
        raise from_realm_error(exc) from exc


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def stream_response(run: Run, chunks: AsyncIterator[dict]) -> StreamingResponse:
    """``chunks`` as server-sent events, then ``[DONE]``; the choices are cancelled if the
    client goes away first."""

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield sse(chunk)
        except RealmError as exc:  # the status line is sent already: the error is an event
            error = from_realm_error(exc)
            run.metrics.errors.labels(error.code or "error").inc()
            yield sse(
                {
                    "error": {
                        "message": error.message,
                        "type": error.type,
                        "param": error.param,
                        "code": error.code,
                    }
                }
            )
        finally:
            cancel_unfinished(run.handles)

    return StreamingResponse(
        with_done(events()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
