"""The OpenAI-compatible HTTP API over realm models: FastAPI routes on the batching engine.

``create_app(registry)`` gives the ASGI app; `realm serve` runs it with uvicorn. Each choice
of each request is its own sequence in its model's engine, so requests from many clients
decode together in the engine's batched steps. The routes only translate: OpenAI fields to
`realm.engine.Request`, engine events to JSON or server-sent events, realm errors to OpenAI
error objects (errors.py).
"""

from __future__ import annotations

import hmac
import json

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from realm.errors import RealmError
from realm.server.access_log import LOG, AccessLog
from realm.server.chat import create_chat_completion
from realm.server.completions import create_completion
from realm.server.errors import APIError, from_realm_error, handle_api_error, validation_error
from realm.server.metrics import Metrics
from realm.server.registry import ModelRegistry
from realm.server.schemas import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest


def create_app(registry: ModelRegistry, api_key: str | None = None, log_prompts: bool = False) -> FastAPI:
    """The server's ASGI app for the models in `registry` (which may still be loading).

    ``api_key``: required as ``Authorization: Bearer`` on the API routes. ``log_prompts``: log
    each request's prompt (never logged otherwise).
    """
    app = FastAPI(title="realm", summary="OpenAI-compatible API for GGUF models run by realm")
    app.add_middleware(AccessLog)
    metrics = Metrics(registry.engines)
    registry.on_loaded = metrics.model_loaded
    app.state.registry = registry
    app.state.metrics = metrics

    async def counted_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        metrics.errors.labels(exc.code or str(exc.status)).inc()
        return await handle_api_error(request, exc)

    async def counted_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = validation_error(exc)
        metrics.errors.labels(error.code).inc()
        return error.response()

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
        if log_prompts:
            LOG.info("prompt for %s: %s", body.model, json.dumps(body.prompt, ensure_ascii=False))
        return await create_completion(registry.get(body.model), body, request, metrics)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        if log_prompts:
            messages = [m.model_dump(exclude_none=True) for m in body.messages]
            LOG.info("messages for %s: %s", body.model, json.dumps(messages, ensure_ascii=False))
        return await create_chat_completion(registry.get(body.model), body, request, metrics)

    return app
