"""Rendering a GGUF's ``tokenizer.chat_template`` (a Jinja2 template) in a bounded sandbox.

The template comes from the model file, so it is untrusted input: it renders in jinja2's
immutable sandbox extended with bounds on time, size and recursion (`realm.chat_sandbox`,
`realm.chat_limits`), and every way it can fail is a `ChatTemplateError` naming the file.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from realm.arguments import check_int, is_number
from realm.chat_limits import MAX_OUTPUT_CHARS, TIME_LIMIT_S, TIME_PER_MESSAGE_S, Render, rendering
from realm.chat_sandbox import compiled, join_bounded
from realm.errors import ChatTemplateError, InvalidParameterError

if TYPE_CHECKING:
    from realm.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "tool")

_FIX = "fix the template or pass a working one as chat_template="
_LONGER = "shorten the conversation, or pass a larger max_output_chars if it really is this long"


def check_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate ``[{"role": ..., "content": ...}]`` and return plain dict copies."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ChatTemplateError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatTemplateError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise ChatTemplateError(f"messages[{i}]['role'] must be one of {ROLES}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise ChatTemplateError(
                f"messages[{i}]['content'] must be a string, got {type(m['content']).__name__}"
            )
        out.append(dict(m))
    return out


def _check_template(template: Any, source: str) -> str:
    """The template text; a `ChatTemplateError` when there is none or it is not text."""
    if template is not None and not isinstance(template, str):
        # GGUF metadata can hold any type under the key; numpy arrays have no plain truth value
        if hasattr(template, "dtype") and hasattr(template, "size"):
            found = f"an array of {template.size} {template.dtype} values"
        else:
            found = f"a value of type {type(template).__name__} ({reprlib.repr(template)})"
        raise ChatTemplateError(
            f"the chat template of {source} (GGUF key tokenizer.chat_template) is {found}; expected "
            "a string holding a Jinja2 template. Pass one as chat_template= or use a file whose "
            "metadata is intact"
        )
    if not template:
        raise ChatTemplateError(
            f"{source} has no chat template (tokenizer.chat_template); use generate() with a prompt "
            "you format yourself"
        )
    return template


def _check_limits(time_limit: Any, max_output_chars: Any) -> None:
    if not is_number(time_limit) or not time_limit > 0:
        raise InvalidParameterError(f"time_limit must be a number of seconds > 0, got {time_limit!r}")
    check_int("max_output_chars", max_output_chars, minimum=1)


def render_chat(
    template: str | None,
    messages: Sequence[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    source: str = "the model",
    time_limit: float = TIME_LIMIT_S,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> str:
    """Render ``messages`` with ``template``; `ChatTemplateError` when there is none or it fails.

    Compiling and rendering stop with a `ChatTemplateError` after ``time_limit`` seconds plus
    `TIME_PER_MESSAGE_S` per message, when the prompt would exceed ``max_output_chars``
    characters, and at the other bounds of `realm.chat_limits` (nesting of calls, size of the
    values the template builds).

    >>> render_chat("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    ...             [{"role": "user", "content": "hi"}])
    '<user>hi'
    """
    text = _check_template(template, source)
    msgs = check_messages(messages)
    _check_limits(time_limit, max_output_chars)
    allowed_s = time_limit + TIME_PER_MESSAGE_S * len(msgs)
    with rendering(Render(source, allowed_s, max_output_chars)) as r:
        try:
            chunks = compiled(text).generate(
                messages=msgs,
                add_generation_prompt=add_generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
            )
            try:
                return join_bounded(r, chunks, "a prompt", _LONGER)
            finally:
                chunks.close()
        except ChatTemplateError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of untrusted template code is the template's
            raise ChatTemplateError(
                f"the chat template of {source} failed to render: {type(exc).__name__}: {exc}; {_FIX}"
            ) from exc


def chat_prompt_tokens(
    tokenizer: Tokenizer, template: str | None, messages: Sequence[dict[str, Any]], source: str = "the model"
) -> list[int]:
    """Render ``messages`` and tokenize the result as llama.cpp does for chat: special tokens parsed.

    BOS is added once: by the template when it writes ``bos_token`` itself, else by the tokenizer
    where the model's metadata asks for it.
    """
    bos = tokenizer.token_text(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos = tokenizer.token_text(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    text = render_chat(template, messages, bos_token=bos, eos_token=eos, source=source)
    bos_in_text = bool(bos) and text.startswith(bos)
    return tokenizer.tokenize(text, add_bos=False if bos_in_text else None, special=True)
