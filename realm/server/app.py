"""The OpenAI-compatible HTTP API over realm models: FastAPI routes on the batching engine.

``create_app(registry)`` gives the ASGI app; `realm serve` runs it with uvicorn. Each choice
of each request is its own sequence in its model's engine, so requests from many clients
decode together in the engine's batched steps. The routes only translate: OpenAI fields to
`realm.engine.Request`, engine events to JSON or server-sent events, realm errors to OpenAI
error objects (errors.py).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from realm.errors import RealmError
from realm.server.errors import APIError, from_realm_error, handle_api_error, handle_validation_error
from realm.server.metrics import Metrics
from realm.server.registry import ModelRegistry, ServedModel
from realm.server.responses import ResponseIds, finish_reason, sse, usage, with_done
from realm.server.runs import cancel_unfinished, merged_pieces, submit_choices
from realm.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    _Sampling,
)


def create_app(registry: ModelRegistry, api_key: str | None = None) -> FastAPI:
    """The server's ASGI app for the models in `registry` (which may still be loading)."""
    app = FastAPI(title="realm", summary="OpenAI-compatible API for GGUF models run by realm")
    metrics = Metrics(registry.engines)
    registry.on_loaded = lambda served, seconds: metrics.load_seconds.seconds.__setitem__(
        (served.id, served.backend), seconds
    )
    app.state.registry = registry
    app.state.metrics = metrics

    async def counted_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        metrics.errors.labels(exc.code or str(exc.status)).inc()
        return await handle_api_error(request, exc)

    async def counted_validation_error(request: Request, exc: Exception) -> Response:
        metrics.errors.labels("invalid_value").inc()
        return await handle_validation_error(request, exc)

    app.add_exception_handler(APIError, counted_api_error)
    app.add_exception_handler(RequestValidationError, counted_validation_error)

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                type="authentication_error",
            )

    guarded = [Depends(authorized)]

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 when every model is loaded; 503 while loading (or after a load failed)."""
        if registry.error is not None:
            return JSONResponse({"status": "error", "error": registry.error}, status_code=503)
        if not registry.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=guarded)
    async def list_models() -> dict:
        return {"object": "list", "data": [m.card() for m in registry.all()]}

    @app.get("/v1/models/{model_id}", dependencies=guarded)
    async def get_model(model_id: str) -> dict:
        return registry.get(model_id).card()

    @app.post("/tokenize", dependencies=guarded)
    async def tokenize(body: TokenizeRequest) -> dict:
        served = registry.get(body.model)
        ids = served.model.tokenize(
            body.content, add_bos=None if body.add_special else False, special=body.parse_special
        )
        return {"tokens": ids}

    @app.post("/detokenize", dependencies=guarded)
    async def detokenize(body: DetokenizeRequest) -> dict:
        served = registry.get(body.model)
        try:
            return {"content": served.model.detokenize(body.tokens)}
        except RealmError as exc:
            raise from_realm_error(exc, param="tokens") from exc

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        served = registry.get(body.model)
        _refuse_unsupported(
            body, logprobs=body.logprobs is not None, echo=body.echo, suffix=body.suffix is not None
        )
        prompts = _completion_prompts(served, body.prompt)
        limits = [_max_tokens(served, ids, body.max_tokens, "max_tokens") for ids in prompts]
        ids = ResponseIds(served.id, "cmpl")
        run = _Run(served, metrics, prompts, body, limits)
        if body.stream:
            return _stream(run, _completion_chunks(run, ids))
        texts = await run.collect(request)
        choices = [
            {
                "index": i,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason(run.handles[i].finish_reason if run.handles else "length"),
            }
            for i, text in enumerate(texts)
        ]
        return JSONResponse(
            {**ids.head("text_completion"), "choices": choices, "usage": usage(run.n_prompt, run.n_generated)}
        )

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        served = registry.get(body.model)
        _refuse_unsupported(body, logprobs=body.logprobs or body.top_logprobs is not None)
        prompt = _chat_prompt(served, body)
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        limits = [_max_tokens(served, prompt, requested, name)]
        ids = ResponseIds(served.id, "chatcmpl")
        run = _Run(served, metrics, [prompt], body, limits)
        if body.stream:
            return _stream(run, _chat_chunks(run, ids))
        texts = await run.collect(request)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason(run.handles[i].finish_reason),
            }
            for i, text in enumerate(texts)
        ]
        return JSONResponse(
            {**ids.head("chat.completion"), "choices": choices, "usage": usage(run.n_prompt, run.n_generated)}
        )

    return app


# ---------------------------------------------------------------------------- requests


def _refuse_unsupported(body: _Sampling, **asked: bool) -> None:
    """Fields realm does not implement yet are refused by name, never ignored silently."""
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise APIError(
                400,
                f"'{name}' is not supported by this server yet; leave it at 0 "
                "(realm's 'repeat_penalty' is available)",
                param=name,
                code="unsupported_parameter",
            )
    for name, wanted in asked.items():
        if wanted:
            raise APIError(
                400, f"'{name}' is not supported by this server yet", param=name, code="unsupported_parameter"
            )


def _completion_prompts(served: ServedModel, prompt: str | list) -> list[list[int]]:
    """Token ids of each prompt: text is tokenized as `Model.generate` does; ids are used as given."""
    if isinstance(prompt, str):
        texts_or_ids: list = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        texts_or_ids = [prompt]
    else:
        texts_or_ids = list(prompt)
    if not texts_or_ids:
        raise APIError(400, "'prompt' is empty: give text, token ids, or a list of them", param="prompt")
    prompts = []
    for p in texts_or_ids:
        ids = served.model.tokenize(p) if isinstance(p, str) else list(p)
        if not ids:
            raise APIError(400, "a prompt is empty: give at least one token", param="prompt")
        bad = [t for t in ids if not 0 <= t < served.model.n_vocab]
        if bad:
            raise APIError(
                400,
                f"token id {bad[0]} is outside the vocabulary (0..{served.model.n_vocab - 1})",
                param="prompt",
            )
        prompts.append(ids)
    return prompts


def _chat_prompt(served: ServedModel, body: ChatCompletionRequest) -> list[int]:
    """The chat template's rendering of the messages, as token ids."""
    template = served.chat_template
    if template is None and served.model.gguf.metadata.get("tokenizer.chat_template") is None:
        raise APIError(
            400,
            f"model '{served.id}' has no chat template; use /v1/completions, or start "
            "the server with --chat-template FILE",
            param="messages",
            code="no_chat_template",
        )
    messages = []
    for m in body.messages:
        content = (
            m.content
            if isinstance(m.content, str) or m.content is None
            else "\n".join(part.text for part in m.content)
        )
        message = {"role": m.role, "content": content or ""}
        if m.name is not None:
            message["name"] = m.name
        messages.append(message)
    try:
        return served.model.chat_tokens(messages, chat_template=template)
    except RealmError as exc:
        raise from_realm_error(exc, param="messages") from exc


def _max_tokens(served: ServedModel, prompt: Sequence[int], requested: int | None, name: str) -> int:
    """Tokens to generate at most: as requested, or (None) up to the end of the context."""
    n_ctx = served.model.n_ctx
    room = n_ctx - len(prompt)
    if requested is None:
        requested = room
    if room < 1 or requested > room:
        raise APIError(
            400,
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{len(prompt) + max(requested, 0)} tokens ({len(prompt)} in the prompt, {requested} for "
            f"the completion). Please reduce the prompt or '{name}'.",
            param=name if room >= 1 else "messages",
            code="context_length_exceeded",
        )
    return requested


class _Run:
    """One HTTP request's choices, submitted to the model's engine."""

    def __init__(
        self,
        served: ServedModel,
        metrics: Metrics,
        prompts: list[list[int]],
        body: _Sampling,
        limits: list[int],
    ) -> None:
        self.n_prompt = sum(len(p) for p in prompts)
        self.n = len(prompts) * body.n
        self.stats = metrics.request(served.id, served.backend, self.n_prompt)
        self.metrics = metrics
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.handles = []
        if all(limit == 0 for limit in limits):  # nothing to generate (max_tokens=0)
            return
        try:
            self.handles = submit_choices(served.model.engine, prompts, body, limits)
        except RealmError as exc:
            raise from_realm_error(exc) from exc

    @property
    def n_generated(self) -> int:
        return sum(len(h.tokens) for h in self.handles)

    async def pieces(self) -> AsyncIterator[tuple[int, str | None]]:
        """Every choice's pieces as they come; records the request's metrics."""
        try:
            async for index, piece in merged_pieces(self.handles):
                if piece is not None:
                    if self.stats.last.get(index) is None and self.handles[index].admitted_at:
                        self.stats.queued(self.handles[index].admitted_at - self.handles[index].submitted_at)
                    self.stats.token(index)
                yield index, piece
        finally:
            cancel_unfinished(self.handles)
        self.stats.finish(finish_reason(h.finish_reason) for h in self.handles)

    async def collect(self, request: Request) -> list[str]:
        """Every choice's whole text; a client that disconnects first cancels the choices."""
        texts = [""] * self.n
        if not self.handles:
            return texts

        async def read() -> None:
            async for index, piece in self.pieces():
                if piece:
                    texts[index] += piece

        reader = asyncio.create_task(read())
        gone = asyncio.create_task(_disconnected(request))
        done, _ = await asyncio.wait({reader, gone}, return_when=asyncio.FIRST_COMPLETED)
        if reader not in done:  # the client went away: nobody reads the answer
            reader.cancel()
            cancel_unfinished(self.handles)
            raise APIError(499, "client closed the request", code="client_closed_request")
        gone.cancel()
        try:
            reader.result()
        except RealmError as exc:
            raise from_realm_error(exc) from exc
        return texts


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _stream(run: _Run, chunks: AsyncIterator[dict]) -> StreamingResponse:
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


async def _completion_chunks(run: _Run, ids: ResponseIds) -> AsyncIterator[dict]:
    head = ids.head("text_completion")
    async for index, piece in run.pieces():
        if piece is None:
            reason = finish_reason(run.handles[index].finish_reason)
            yield {
                **head,
                "choices": [{"index": index, "text": "", "logprobs": None, "finish_reason": reason}],
            }
        elif piece:
            yield {
                **head,
                "choices": [{"index": index, "text": piece, "logprobs": None, "finish_reason": None}],
            }
    if not run.handles:  # max_tokens=0: one empty choice per prompt, ended for length
        for index in range(run.n):
            yield {
                **head,
                "choices": [{"index": index, "text": "", "logprobs": None, "finish_reason": "length"}],
            }
    if run.include_usage:
        yield {**head, "choices": [], "usage": usage(run.n_prompt, run.n_generated)}


async def _chat_chunks(run: _Run, ids: ResponseIds) -> AsyncIterator[dict]:
    head = ids.head("chat.completion.chunk")
    with_usage = {"usage": None} if run.include_usage else {}
    for index in range(run.n):  # the first delta of each choice says who speaks
        yield {
            **head,
            "choices": [
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            **with_usage,
        }
    async for index, piece in run.pieces():
        if piece is None:
            reason = finish_reason(run.handles[index].finish_reason)
            yield {
                **head,
                "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}],
                **with_usage,
            }
        elif piece:
            yield {
                **head,
                "choices": [
                    {"index": index, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
                ],
                **with_usage,
            }
    if run.include_usage:
        yield {**head, "choices": [], "usage": usage(run.n_prompt, run.n_generated)}
