"""Rendering a GGUF's ``tokenizer.chat_template`` (a Jinja2 template) in a sandbox."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from realm.errors import ChatTemplateError

if TYPE_CHECKING:
    from realm.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "tool")


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the messages: {message}")


def _environment() -> ImmutableSandboxedEnvironment:
    # the same settings Hugging Face's apply_chat_template uses, so templates render as their authors saw
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_exception
    return env


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


def render_chat(
    template: str | None,
    messages: Sequence[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    source: str = "the model",
) -> str:
    """Render ``messages`` with ``template``; `ChatTemplateError` when there is none or it fails.

    >>> render_chat("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    ...             [{"role": "user", "content": "hi"}])
    '<user>hi'
    """
    if not template:
        raise ChatTemplateError(
            f"{source} has no chat template (tokenizer.chat_template); use generate() with a prompt "
            "you format yourself"
        )
    msgs = check_messages(messages)
    try:
        compiled = _environment().from_string(template)
        return compiled.render(
            messages=msgs,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except ChatTemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the chat template of {source} failed to render: {exc}") from exc


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
