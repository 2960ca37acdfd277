"""A chat template is untrusted input: rendering it is bounded in time, size and recursion.

Each test renders a template that would hang the process, exhaust its memory or escape the
exception family without the bounds, and checks that it stops early with a
`ChatTemplateError` naming the file and the bound, quickly and without a large allocation.
"""

from __future__ import annotations

import time
import tracemalloc

import gguf
import numpy as np
import pytest

from realm.chat import render_chat
from realm.chat_limits import MAX_OUTPUT_CHARS, TIME_LIMIT_S, TIME_PER_MESSAGE_S, WORK_FACTOR
from realm.errors import ChatTemplateError
from realm.gguf.reader import read_gguf

MESSAGES = [{"role": "user", "content": "hi"}]

# the time allowed for MESSAGES, with slack for a slow, busy test machine
FAST_S = TIME_LIMIT_S + TIME_PER_MESSAGE_S + 2.0
# the text the work bound lets a template hold (one byte a character here), plus room for
# Python's own overhead: far below the gigabytes the unbounded templates reach
SMALL_PEAK = WORK_FACTOR * MAX_OUTPUT_CHARS + 16 * 2**20


def refused(template: str, match: str | None = None, **limits) -> tuple[ChatTemplateError, float, int]:
    """Render ``template``; return the error, the seconds it took and the traced peak bytes."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ChatTemplateError, match=match) as info:
            render_chat(template, MESSAGES, source="evil.gguf", **limits)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "evil.gguf" in str(info.value)
    return info.value, seconds, peak


def test_nested_range_loops_stop_at_the_time_limit():
    tpl = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    _, seconds, _ = refused(tpl, match="longer than 2.001 s")
    assert seconds < FAST_S


def test_a_loop_over_a_long_string_is_bounded_too():
    tpl = "{% set s = 'ab' * 500000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    _, seconds, _ = refused(tpl, match="longer than")
    assert seconds < FAST_S


def test_the_time_limit_can_be_set_by_the_caller():
    tpl = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    _, seconds, _ = refused(tpl, match="longer than 0.201 s", time_limit=0.2)
    assert seconds < 1.5


@pytest.mark.parametrize(
    "expr", ["'x' * 4000000000", "4000000000 * 'x'", "[0] * 4000000000", "('ab',) * 4000000000"]
)
def test_huge_repetition_is_refused_before_allocating(expr):
    _, seconds, peak = refused("{{ " + expr + " }}", match="characters")
    assert seconds < FAST_S and peak < SMALL_PEAK


def test_recursive_macro_gives_a_clean_error():
    err, _, _ = refused("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", match="deep")
    assert not isinstance(err.__cause__, RecursionError)


def test_recursive_loop_gives_a_clean_error():
    tpl = "{% for x in [[1]] recursive %}{{ loop([x]) }}{% endfor %}"
    refused(tpl, match="deep")


def test_range_with_too_many_items_is_refused():
    _, _, peak = refused("{% for i in range(10**12) %}{% endfor %}", match="range")
    assert peak < SMALL_PEAK
    refused("{{ range(10**40)|length }}", match="range")


@pytest.mark.parametrize(
    "template",
    ["{{ 1/0 }}", "{{ 'x'.encode('utf-8').decode('nope') }}", "{{ messages[0].content + 1 }}",
     "{{ 10 ** (10 ** 8) }}", "{{ (2 ** 10000) * (2 ** 10000) }}"],
)
def test_every_exception_from_rendering_is_a_chat_template_error(template):
    _, seconds, _ = refused(template)
    assert seconds < FAST_S


@pytest.mark.parametrize(
    ("value", "shown"),
    [(7, "int"), (3.5, "float"), (np.array([1, 2, 3], dtype=np.int32), "3 int32"), (["a", "b"], "list")],
)
def test_a_chat_template_that_is_not_a_string_is_refused(value, shown):
    with pytest.raises(ChatTemplateError, match="tokenizer.chat_template") as info:
        render_chat(value, MESSAGES, source="odd.gguf")
    assert "odd.gguf" in str(info.value) and shown in str(info.value) and "string" in str(info.value)


@pytest.mark.parametrize("kind", ["number", "array"])
def test_a_numeric_chat_template_read_from_a_file_is_refused(tmp_path, kind):
    path = tmp_path / f"{kind}.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    if kind == "number":
        writer.add_uint32("tokenizer.chat_template", 7)
    else:
        writer.add_array("tokenizer.chat_template", [1, 2, 3])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with read_gguf(path, tensors_data=False) as f:
        template = f.metadata["tokenizer.chat_template"]
    with pytest.raises(ChatTemplateError, match="tokenizer.chat_template"):
        render_chat(template, MESSAGES, source=str(path))


DOUBLING = "{% set ns = namespace(x=SEED) %}{% for i in range(64) %}{% set ns.x = STEP %}{% endfor %}"

AMPLIFIERS = {
    "concat doubling": DOUBLING.replace("SEED", "'ab'").replace("STEP", "ns.x ~ ns.x"),
    "plus doubling": DOUBLING.replace("SEED", "'ab'").replace("STEP", "ns.x + ns.x"),
    "list doubling": DOUBLING.replace("SEED", "[1]").replace("STEP", "ns.x + ns.x"),
    "block set doubling": "{% set ns = namespace(x='ab') %}{% for i in range(64) %}"
    "{% set y %}{{ ns.x }}{{ ns.x }}{% endset %}{% set ns.x = y %}{% endfor %}",
    "macro doubling": "{% macro d(s) %}{{ s }}{{ s }}{% endmacro %}"
    + DOUBLING.replace("SEED", "'ab'").replace("STEP", "d(ns.x)"),
    "nested list printed": DOUBLING.replace("SEED", "[1]").replace("STEP", "[ns.x, ns.x]") + "{{ ns.x }}",
    "nested list as json": DOUBLING.replace("SEED", "[1]").replace("STEP", "[ns.x, ns.x]")
    + "{{ ns.x|tojson }}",
    "nested lists compared": "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(64) %}"
    "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}",
    "nested tuple hashed": DOUBLING.replace("SEED", "(1,)").replace("STEP", "(ns.x, ns.x)")
    + "{{ [ns.x]|unique|list }}",
    "self-nesting list": DOUBLING.replace("SEED", "[]").replace("STEP", "ns.x + [ns.x]") + "{{ ns.x }}",
    "dict building": DOUBLING.replace("SEED", "{}").replace("STEP", "dict(a=ns.x, b=ns.x)") + "{{ ns.x }}",
    "lipsum": "{{ lipsum(100000, max=100000) }}",
    "center": "{{ 'x'|center(4000000000) }}",
    "indent": "{{ ('a\\n' * 100000)|indent(100000) }}",
    "wordwrap": "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 100000) }}",
    "join": "{{ range(1000)|map('string')|map('center', 1000000)|join }}",
    "join method": "{{ ''.join(range(1000)|map('string')|map('center', 1000000)) }}",
    "replace": "{{ ('x' * 1000)|replace('', 'y' * 1000000) }}",
    "replace method": "{{ ('x' * 1000).replace('x', 'y' * 1000000) }}",
    "format filter": "{{ '%0999999999d'|format(1) }}",
    "printf": "{{ '%(a)s' * 1000 % {'a': 'x' * 1000000} }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.format fields": "{{ ('{0}' * 1000).format('x' * 1000000) }}",
    "ljust": "{{ 'x'.ljust(4000000000) }}",
    "zfill": "{{ '1'.zfill(4000000000) }}",
    "expandtabs": "{{ ('\\t' * 1000).expandtabs(1000000) }}",
    "translate": "{{ ('a' * 100000).translate({97: 'b' * 100000}) }}",
    "to_bytes": "{{ (1).to_bytes(4000000000, 'big') }}",
    "batch fill": "{{ [1]|batch(4000000000, 'x')|list }}",
    "slice count": "{{ [1]|slice(4000000000)|list }}",
    "kept in many names": "{% set big = 'x' * 1000000 %}{% set ns = namespace() %}"
    + "".join(f"{{% set ns.a{i} = big ~ {i} %}}" for i in range(200)),
    "tojson indent": "{{ [[[1]]]|tojson(indent=1000000000) }}",
    "output": "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "block called in a loop": "{% block b %}" + "y" * 10000 + "{% endblock %}"
    "{% for i in range(100000) %}{{ self.b() }}{% endfor %}",
    "block output joined": "{% block b %}{% for i in range(100000) %}" + "y" * 10000
    + "{% endfor %}{% endblock %}{{ self.b() }}",
    "macro buffer": "{% set big = 'x' * 1000000 %}{% macro m() %}{% for i in range(100000) %}"
    "{{ big }}{% endfor %}{% endmacro %}{{ m()|length }}",
    "many kept strings": "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
    "{% set ns.l = ns.l + [('x' * 1000000) ~ i] %}{% endfor %}",
    "sliced copies": "{% set big = 'x' * 1000000 %}{% set ns = namespace(l=[]) %}"
    "{% for i in range(100000) %}{% set ns.l = ns.l + [big[i:]] %}{% endfor %}",
}


@pytest.mark.parametrize("name", AMPLIFIERS)
def test_amplifying_templates_are_refused_quickly_and_small(name):
    _, seconds, peak = refused(AMPLIFIERS[name])
    assert seconds < FAST_S, f"{name} took {seconds:.1f} s"
    assert peak < SMALL_PEAK, f"{name} peaked at {peak / 2**20:.0f} MiB"


def test_summing_lists_takes_linear_time():
    start = time.perf_counter()
    assert render_chat("{{ ([[0] * 10] * 50000)|sum(start=[])|length }}", MESSAGES) == "500000"
    assert time.perf_counter() - start < FAST_S


def test_the_output_bound_names_the_remedy_and_can_be_raised():
    messages = [{"role": "user", "content": "x" * 600_000}]
    tpl = "{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="max_output_chars"):
        render_chat(tpl, messages, source="m.gguf", max_output_chars=500_000)
    assert len(render_chat(tpl, messages, source="m.gguf", max_output_chars=700_000)) == 600_000


@pytest.mark.parametrize(
    "limits", [{"time_limit": 0}, {"time_limit": -1.0}, {"max_output_chars": 0}, {"max_output_chars": 2.5}]
)
def test_bad_limits_are_rejected(limits):
    with pytest.raises(ValueError):
        render_chat("x", MESSAGES, **limits)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
        "{{ messages|attr('__class__') }}",
        "{{ '{0.__class__.__mro__}'.format(messages) }}",
        "{{ (messages|map('upper')).gi_frame }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.pop() }}",
    ],
)
def test_python_internals_stay_out_of_reach(template):
    try:
        text = render_chat(template, MESSAGES)
    except ChatTemplateError:
        return
    assert "<" not in text and "os" not in text and "uid" not in text
