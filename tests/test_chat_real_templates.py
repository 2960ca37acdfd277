"""Real chat templates render exactly as plain jinja2 renders them, long conversations included.

The reference is jinja2's immutable sandbox with the same settings and no bounds: what realm
rendered before the bounds were added.
"""

from __future__ import annotations

from typing import Any

import pytest
from chat_templates import LLAMA3, QWEN3, QWEN25, TOOLS
from golden import model_path
from jinja2.sandbox import ImmutableSandboxedEnvironment
from test_chat import CHATML
from test_chat_families import GEMMA3_TEMPLATE

from realm.chat import render_chat
from realm.chat_sandbox import compiled
from realm.gguf.reader import read_gguf

TEMPLATES = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "gemma3": GEMMA3_TEMPLATE,
    "qwen2.5": QWEN25,
    "qwen2.5 tools": TOOLS + QWEN25,
    "qwen3": QWEN3,
    "qwen3 tools": TOOLS + QWEN3,
}
# templates that read tool calls and tool results; the others insist on user/assistant turns
WITH_TOOL_MESSAGES = {"chatml", "qwen2.5", "qwen2.5 tools", "qwen3", "qwen3 tools"}


def plain_render(template: str, messages: list[dict[str, Any]]) -> str:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )


def conversation(turns: int, size: int, tool_messages: bool = False) -> list[dict[str, Any]]:
    """A system prompt and ``turns`` user/assistant exchanges of about ``size`` characters each."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Answer briefly. <b>&'\"</b>"}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i}: " + "wörds ✓ " * (size // 8)})
        if tool_messages and i % 3 == 1:
            call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            messages.append({"role": "tool", "content": '{"temperature": 21}'})
        reply = f"<think>\nthinking {i}\n</think>\n\nanswer {i}: " + "y" * size
        messages.append({"role": "assistant", "content": reply})
    return messages


@pytest.mark.parametrize("turns", [1, 300])
@pytest.mark.parametrize("name", TEMPLATES)
def test_real_templates_render_as_plain_jinja2_does(name, turns):
    messages = conversation(turns, 200, tool_messages=name in WITH_TOOL_MESSAGES)
    if name == "gemma3":
        messages = messages[1:]  # a system prompt is folded into the first user turn
    text = render_chat(TEMPLATES[name], messages, bos_token="<s>", eos_token="</s>")
    assert text == plain_render(TEMPLATES[name], messages)


def test_a_long_conversation_with_the_smollm2_template_is_not_refused():
    path = model_path("smollm2")
    with read_gguf(path, tensors_data=False) as f:
        template = f.metadata["tokenizer.chat_template"]
    messages = conversation(1500, 1000)  # 3001 messages, about 3 million characters
    text = render_chat(template, messages, bos_token="<s>", eos_token="</s>", source=str(path))
    assert len(text) > 3_000_000
    assert text == plain_render(template, messages)


def test_a_template_is_compiled_once_per_text():
    template = CHATML + "{# compiled once #}"
    before = compiled.cache_info()
    for _ in range(3):
        render_chat(template, [{"role": "user", "content": "hi"}])
    after = compiled.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 2


# each filter, method, operator and statement that realm bounds, on ordinary inputs
CONSTRUCTS = [
    "{{ 'ab'|center(9) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent('> ', blank=true) }}",
    "{{ 'aaa bbb ccc'|wordwrap(5) }}|{{ 'a b c'|wordwrap(1, wrapstring='|') }}",
    "{{ 'abc'|replace('b', 'xx') }}|{{ 'aaa'|replace('a', 'b', 2) }}|{{ 'ab'|replace('', '.') }}",
    "{{ [1, 2, 3]|join(', ') }}|{{ [{'n': 'a'}, {'n': 'b'}]|join('-', attribute='n') }}",
    "{{ '%s-%05d'|format('a', 3) }}|{{ '%(x)s'|format(x=1) }}|{{ '%s and %r %%' % ('a', 'b') }}",
    '{{ [1, 2, 3, 4, 5]|batch(2, 0)|list }}|{{ [1, 2, 3, 4, 5]|slice(2)|list }}',
    '{{ [1, 2, 3]|slice(2, 0)|list }}',
    '{{ [[1], [2, 3]]|sum(start=[]) }}|{{ [1, 2]|sum }}',
    "{{ [{'p': 1}, {'p': 2}]|sum(attribute='p') }}",
    '{{ ((1,), (2,))|sum(start=()) }}|{{ [1.5, 2]|sum(start=1) }}',
    "{{ ['b', 'A', 'c']|sort }}|{{ ['b', 'A', 'c']|sort(case_sensitive=true, reverse=true) }}",
    "{{ [{'n': 2}, {'n': 1}]|sort(attribute='n') }}|{{ messages|groupby('role')|list }}",
    "{{ {'b': [1, '<&>'], 'a': none}|tojson }}|{{ {'b': [1, 2]}|tojson(indent=2) }}",
    "{{ \"it's\"|tojson }}",
    "{{ {'a': [1, {'b': 2}], 'c': 'x' * 100}|pprint }}|{{ 'see https://x.org now & then'|urlize }}",
    '{{ lipsum(1)|length > 0 }}|{{ range(3)|list }}|{{ range(10, 0, -3)|list }}',
    "{{ 'x'.center(5, '*') }}|{{ 'x'.ljust(3) }}|{{ '7'.zfill(3) }}|{{ 'a\\tb'.expandtabs(4) }}",
    "{{ 'abc'.replace('b', 'yy') }}|{{ '-'.join(['a', 'b']) }}",
    "{{ '-'.join(messages|map(attribute='role')) }}",
    "{{ 'abc'.translate({97: 'A'}) }}|{{ (258).to_bytes(2, 'big') }}|{{ 'a b'.split() }}",
    "{{ '{} {:>4} {x}'.format(1, 'a', x=2) }}|{{ '{a}'.format_map({'a': 1}) }}",
    "{{ '{0.role}'.format(messages[0]) }}",
    "{{ 'a' * 3 }}{{ 3 * [1] }}{{ 2 ** 10 }}{{ 2 ** -1 }}{{ 7 % 3 }}",
    "{{ [1] + [2] }}{{ (1,) + (2,) }}{{ 1 + 2.5 }}",
    "{{ 'a' ~ 1 ~ none }}|{{ (1, 2)[::-1] }}{{ 'abc'[1:] }}{{ messages[:1] }}",
    "{{ {'k': [1, (2, 3)]} }}",
    "{% for x in 'ab' %}{{ loop.index }}{{ loop.length }}{{ loop.last }}{{ loop.cycle('o', 'e') }}"
    "{% endfor %}",
    "{% for x in [1, 2, 3] if x > 1 %}{{ x }}{% else %}none{% endfor %}",
    "{% for x in [] %}{% else %}empty{% endfor %}",
    "{% for x in [{'c': [{'c': []}]}] recursive %}<{{ loop.depth }}{{ loop(x.c) }}>{% endfor %}",
    "{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %}",
    "{% for k, v in {'x': 1}.items() %}{{ k }}{{ v }}{% endfor %}",
    '{% block b %}B{% endblock %}{{ self.b() }}',
    '{% macro m(a) %}[{{ a }}{{ caller() if caller }}]{% endmacro %}{% call m(1) %}c{% endcall %}{{ m(2) }}',
    "{% filter upper %}x{{ 'y' }}{% endfilter %}{% set x %}a{{ 1 }}{% endset %}{{ x }}",
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
    "{{ ns.n }}{{ ns }}",
    "{{ messages|selectattr('role', 'eq', 'user')|list|length }}{{ dict(a=1)|items|list }}",
    "{{ messages|first }}",
    "{{ 10 ** 20 }}|{{ cycler('a', 'b').next() }}|{{ '%c%c' % (72, 105) }}",
    "{{ 'ab'|list|unique|list }}",
    "{% autoescape true %}{{ '<' ~ 'b' }}{{ '<i>'|safe ~ '<' }}{{ '{}'.format('<') }}{% endautoescape %}",
]


@pytest.mark.parametrize("template", CONSTRUCTS)
def test_bounded_constructs_render_as_plain_jinja2_does(template):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u <b>"}]
    text = render_chat(template, messages, bos_token="<s>", eos_token="</s>")
    assert text == plain_render(template, messages)
