"""``POST /v1/chat/completions``: messages through the model's chat template, with per-token
``logprobs`` (and ``top_logprobs`` alternatives) streamed or whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from realm.errors import RealmError
from realm.server.checks import max_tokens
from realm.server.errors import APIError, from_realm_error
from realm.server.logprobs import chat_entry
from realm.server.metrics import Metrics
from realm.server.registry import ServedModel
from realm.server.responses import ResponseIds, usage
from realm.server.run import Run, stream_response
from realm.server.schemas import ChatCompletionRequest


def chat_prompt(served: ServedModel, body: ChatCompletionRequest) -> list[int]:
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
        parts = m.content if isinstance(m.content, list) else None
        content = "\n".join(part.text for part in parts) if parts is not None else (m.content or "")
        message = {"role": m.role, "content": content}
        if m.name is not None:
            message["name"] = m.name
        messages.append(message)
    try:
        return served.model.chat_tokens(messages, chat_template=template)
    except RealmError as exc:
        raise from_realm_error(exc, param="messages") from exc


async def create_chat_completion(
    served: ServedModel, body: ChatCompletionRequest, request: Request, metrics: Metrics
) -> Response:
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(
            400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs", code="invalid_value"
        )
    prompt = chat_prompt(served, body)
    if body.max_completion_tokens is not None:
        limit = max_tokens(served, prompt, body.max_completion_tokens, "max_completion_tokens")
    else:
        limit = max_tokens(served, prompt, body.max_tokens, "max_tokens")
    ids = ResponseIds(served.id, "chatcmpl")
    run = Run(served, metrics, [prompt], body, [limit], keep_logits=body.logprobs)
    request.state.run = run
    n_top = body.top_logprobs or 0
    if body.stream:
        return stream_response(run, _chunks(run, ids, body.logprobs, n_top))
    texts = await run.collect(request)
    choices = []
    for i, text in enumerate(texts):
        logprobs = None
        if body.logprobs:
            handle = run.handles[i]
            content = [
                chat_entry(served.model.tokenizer, row, token, n_top)
                for token, row in zip(handle.tokens, handle.token_logits, strict=True)
            ]
            logprobs = {"content": content, "refusal": None}
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": run.finish_reason(i),
            }
        )
    return JSONResponse(
        {**ids.head("chat.completion"), "choices": choices, "usage": usage(run.n_prompt, run.n_generated)}
    )


async def _chunks(run: Run, ids: ResponseIds, logprobs: bool, n_top: int) -> AsyncIterator[dict]:
    head = ids.head("chat.completion.chunk")
    with_usage = {"usage": None} if run.include_usage else {}
    tokenizer = run.served.model.tokenizer
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
    async for index, piece, position in run.pieces():
        if piece is None:
            yield {
                **head,
                "choices": [
                    {"index": index, "delta": {}, "logprobs": None, "finish_reason": run.finish_reason(index)}
                ],
                **with_usage,
            }
            continue
        entry = None
        if logprobs:  # every token gets a chunk, so every token's log-probability is sent
            handle = run.handles[index]
            entry = {
                "content": [
                    chat_entry(tokenizer, handle.token_logits[position], handle.tokens[position], n_top)
                ],
                "refusal": None,
            }
        elif not piece:
            continue
        yield {
            **head,
            "choices": [
                {"index": index, "delta": {"content": piece}, "logprobs": entry, "finish_reason": None}
            ],
            **with_usage,
        }
    if run.include_usage:
        yield {**head, "choices": [], "usage": usage(run.n_prompt, run.n_generated)}
