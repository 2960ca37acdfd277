"""``POST /v1/completions``: prompts as text or token ids, with ``echo`` and ``logprobs`` (the
legacy shape evaluation harnesses score prompts with: ``echo`` and ``max_tokens=0`` give every
prompt token's log-probability)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from realm.engine.request import Request as EngineRequest
from realm.server.checks import max_tokens, refuse_unsupported
from realm.server.errors import APIError
from realm.server.logprobs import completion_logprobs
from realm.server.metrics import Metrics
from realm.server.registry import ServedModel
from realm.server.responses import ResponseIds, usage
from realm.server.run import Run, stream_response, until_done_or_gone
from realm.server.runs import cancel_unfinished
from realm.server.schemas import CompletionRequest


def completion_prompts(served: ServedModel, prompt: str | list) -> list[tuple[list[int], str]]:
    """(token ids, text) of each prompt: text is tokenized as `Model.generate` does; ids are
    used as given (their text, for ``echo``, is their detokenization)."""
    if isinstance(prompt, str) or (prompt and all(isinstance(p, int) for p in prompt)):
        given: list = [prompt]
    else:
        given = list(prompt)
    if not given:
        raise APIError(
            400,
            "'prompt' is empty: give text, token ids, or a list of them",
            param="prompt",
            code="invalid_value",
        )
    model = served.model
    prompts = []
    for p in given:
        ids = model.tokenize(p) if isinstance(p, str) else list(p)
        if not ids:
            raise APIError(
                400, "a prompt is empty: give at least one token", param="prompt", code="invalid_value"
            )
        bad = next((t for t in ids if not 0 <= t < model.n_vocab), None)
        if bad is not None:
            raise APIError(
                400,
                f"token id {bad} is outside the vocabulary (0..{model.n_vocab - 1})",
                param="prompt",
                code="invalid_value",
            )
        prompts.append((ids, p if isinstance(p, str) else model.detokenize(ids)))
    return prompts


async def create_completion(
    served: ServedModel, body: CompletionRequest, request: Request, metrics: Metrics
) -> Response:
    refuse_unsupported(suffix=body.suffix is not None)
    wants_logprobs = body.logprobs is not None
    if body.stream and (body.echo or wants_logprobs):
        name = "echo" if body.echo else "logprobs"
        raise APIError(
            400, f"'{name}' is not supported with 'stream' yet", param=name, code="unsupported_parameter"
        )
    prompts = completion_prompts(served, body.prompt)
    limits = [max_tokens(served, ids, body.max_tokens, "max_tokens") for ids, _ in prompts]
    ids = ResponseIds(served.id, "cmpl")
    run = Run(served, metrics, [p for p, _ in prompts], body, limits, keep_logits=wants_logprobs)
    request.state.run = run
    if body.stream:
        return stream_response(run, _chunks(run, ids))

    scored: list[np.ndarray] = []  # each prompt's logits at every position (echo + logprobs)
    scoring: list = []  # their engine requests, cancelled if the client goes away

    async def read_all() -> list[str]:
        texts = await run.texts()
        if body.echo and wants_logprobs:
            for p, _ in prompts:
                handle = served.model.engine.submit(EngineRequest(p, all_logits=True))
                scoring.append(handle)
                async for _ in handle:
                    pass
                scored.append(handle.logits())
        return texts

    try:
        texts = await until_done_or_gone(read_all(), request, run.handles)
    finally:
        cancel_unfinished(scoring)
    choices = []
    for i, text in enumerate(texts):
        p_ids, p_text = prompts[i // body.n]
        choice = {
            "index": i,
            "text": p_text + text if body.echo else text,
            "logprobs": None,
            "finish_reason": run.finish_reason(i),
        }
        if wants_logprobs:
            handle = run.handles[i] if run.handles else None
            tokens = list(handle.tokens) if handle else []
            rows: list = list(handle.token_logits) if handle else []
            if body.echo:
                logits = scored[i // body.n]
                tokens = p_ids + tokens
                rows = [None] + [logits[j] for j in range(len(p_ids) - 1)] + rows
            choice["logprobs"] = completion_logprobs(served.model.tokenizer, tokens, rows, body.logprobs)
        choices.append(choice)
    return JSONResponse(
        {**ids.head("text_completion"), "choices": choices, "usage": usage(run.n_prompt, run.n_generated)}
    )


async def _chunks(run: Run, ids: ResponseIds) -> AsyncIterator[dict]:
    head = ids.head("text_completion")
    async for index, piece, _ in run.pieces():
        if piece is None:
            yield {
                **head,
                "choices": [
                    {"index": index, "text": "", "logprobs": None, "finish_reason": run.finish_reason(index)}
                ],
            }
        elif piece:
            yield {
                **head,
                "choices": [{"index": index, "text": piece, "logprobs": None, "finish_reason": None}],
            }
    if not run.handles:  # max_tokens=0: each choice ends at once, for length
        for index in range(run.n):
            yield {
                **head,
                "choices": [{"index": index, "text": "", "logprobs": None, "finish_reason": "length"}],
            }
    if run.include_usage:
        yield {**head, "choices": [], "usage": usage(run.n_prompt, run.n_generated)}
