"""The JSON bodies and server-sent-event chunks the server answers with, as OpenAI defines them.

Every chunk of one response carries the same ``id``, ``created`` and ``model``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class ResponseIds:
    """What every chunk of one response repeats."""

    model: str
    prefix: str  # "cmpl" or "chatcmpl"
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"

    def head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def usage(n_prompt: int, n_generated: int) -> dict:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_generated,
        "total_tokens": n_prompt + n_generated,
    }


def finish_reason(reason: str | None) -> str:
    """OpenAI's name for how a choice ended (realm's are the same two)."""
    return reason if reason in ("stop", "length") else "stop"


def sse(data: dict | str) -> str:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n"


async def with_done(events: AsyncIterator[str]) -> AsyncIterator[str]:
    async for event in events:
        yield event
    yield sse("[DONE]")
