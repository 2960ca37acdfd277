"""Chat template rendering: the sandbox, message checks and the errors."""

from __future__ import annotations

import pytest

from realm.chat import render_chat
from realm.errors import ChatTemplateError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_renders_messages_and_generation_prompt():
    text = render_chat(
        CHATML, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    no_prompt = render_chat(CHATML, [{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert not no_prompt.endswith("assistant\n")


def test_bos_token_is_passed_to_the_template():
    assert (
        render_chat(
            "{{ bos_token }}{{ messages[0].content }}", [{"role": "user", "content": "x"}], bos_token="<bos>"
        )
        == "<bos>x"
    )


def test_no_template_is_a_clear_error():
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_chat(None, [{"role": "user", "content": "Hi"}], source="m.gguf")


@pytest.mark.parametrize(
    "messages",
    [[], "hello", [{"role": "user"}], [{"role": "wizard", "content": "x"}], [{"role": "user", "content": 3}]],
)
def test_bad_messages_are_rejected(messages):
    with pytest.raises(ChatTemplateError):
        render_chat(CHATML, messages)


def test_template_raise_exception_becomes_chat_template_error():
    tpl = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok"
    assert render_chat(tpl, [{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(ChatTemplateError, match="first must be user"):
        render_chat(tpl, [{"role": "assistant", "content": "x"}])


def test_sandbox_blocks_python_internals():
    tpl = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError):
        render_chat(tpl, [{"role": "user", "content": "x"}])


def test_syntax_error_in_template_is_reported():
    with pytest.raises(ChatTemplateError, match="failed to render"):
        render_chat("{% for m in messages %}", [{"role": "user", "content": "x"}])
