"""The request bodies the server accepts, as the OpenAI API defines them.

Unknown fields are ignored (as OpenAI does, so clients that send newer fields keep working);
known fields of the wrong type are refused (strict: ``"max_tokens": "10"`` is a 400, not 10).
Sampling fields left out take realm's defaults, which are llama.cpp's (`SamplingParams`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

N_CHOICES_MAX = 16  # choices per request; each is its own sequence in the engine


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """The fields completions and chat completions share."""

    model: str
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=N_CHOICES_MAX)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    user: str | None = None
    # realm's (llama.cpp's) extra sampling fields, at top level
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: a prompt as text, token ids, or a list of either."""

    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)  # OpenAI's default for completions
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: messages rendered with the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # None: to the end of the context
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class TokenizeRequest(_Body):
    """``POST /tokenize`` (llama.cpp server's shape)."""

    content: str
    model: str | None = None
    add_special: bool = True
    parse_special: bool = False


class DetokenizeRequest(_Body):
    """``POST /detokenize``."""

    tokens: list[int]
    model: str | None = None
