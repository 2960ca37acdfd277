"""Checks of a request against the model it names, before anything is submitted."""

from __future__ import annotations

from collections.abc import Sequence

from realm.server.errors import APIError
from realm.server.registry import ServedModel


def refuse_unsupported(**asked: bool) -> None:
    """Fields realm does not implement yet are refused by name, never ignored silently."""
    for name, wanted in asked.items():
        if wanted:
            raise APIError(
                400, f"'{name}' is not supported by this server yet", param=name, code="unsupported_parameter"
            )


def max_tokens(served: ServedModel, prompt: Sequence[int], requested: int | None, name: str) -> int:
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
