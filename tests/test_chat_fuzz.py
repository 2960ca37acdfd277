"""Random templates built from the constructs that can hang or exhaust a process stay bounded.

Each template is assembled from a small grammar of loops, recursion, repetition, doubling,
container building and amplifying filters and methods, with sizes from tiny to huge. Rendering
must either succeed or raise `ChatTemplateError`, within the time limit (plus the longest step
that cannot be interrupted, small at the output bound used here) and with little memory.

The examples are the same each run unless $REALM_FUZZ_SEED is set (see tests/fuzzing.py).
"""

from __future__ import annotations

import time
import tracemalloc

import hypothesis
import pytest
from hypothesis import strategies as st

from realm.chat import render_chat
from realm.chat_limits import TIME_PER_MESSAGE_S
from realm.errors import ChatTemplateError
from tests.fuzzing import FUZZ_SETTINGS

pytestmark = pytest.mark.fuzz

TIME_LIMIT = 0.3
MAX_OUTPUT = 100_000
SLACK_S = 1.5
# the work bound lets a template hold 8 x MAX_OUTPUT characters (3.2 MB at 4 bytes each);
# the rest is room for Python's own overhead
PEAK_BYTES = 16 * 2**20

NUMBERS = st.sampled_from(
    ["0", "1", "3", "64", "1000", "100000", "10**6", "4000000000", "10**12", "-1", "2**64"]
)
ATOMS = st.sampled_from(
    ["'ab'", "'x\\ty<&'", "[1, 2]", "(1,)", "{'k': 'v'}", "ns.x", "messages", "messages[0].content",
     "loop_var", "none", "range(5)", "lipsum(2)"]
) | NUMBERS


def _fragment(pattern: str, *parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``pattern`` with each ``@`` replaced, in order, by a drawn part."""

    def fill(*drawn: str) -> str:
        text = pattern
        for part in drawn:
            text = text.replace("@", part, 1)
        return text

    return st.builds(fill, *parts)


def _unary(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    n = NUMBERS
    return st.one_of(
        _fragment("(@ * @)", e, n),
        _fragment("(@ * @)", n, e),
        _fragment("(@ ** @)", e, n),
        _fragment("(@|center(@))", e, n),
        _fragment("(@|indent(@))", e, n),
        _fragment("(@|batch(@, 0)|list)", e, n),
        _fragment("(@|slice(@)|list)", e, n),
        _fragment("'{:>@}'.format(@)", n, e),
        _fragment("'%0@d'|format(@)", n, e),
        _fragment("(@).ljust(@)", e, n),
        _fragment("range(@)", n),
        _fragment("lipsum(@, max=@)", n, n),
        _fragment("(@|string|wordwrap(1, wrapstring='--'))", e),
        _fragment("(@|tojson)", e),
        _fragment("(@|pprint)", e),
        _fragment("(@|list)", e),
        _fragment("(@|unique|list)", e),
        _fragment("(@|sort)", e),
        _fragment("(@|join(','))", e),
        _fragment("(@|sum(start=[]))", e),
        _fragment("(@|length)", e),
        _fragment("(@[::-1])", e),
    )


def _binary(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        _fragment("(@ ~ @)", e, e),
        _fragment("(@ + @)", e, e),
        _fragment("(@ % @)", e, e),
        _fragment("[@, @]", e, e),
        _fragment("(@, @)", e, e),
        _fragment("dict(a=@, b=@)", e, e),
        _fragment("(@ == @)", e, e),
        _fragment("(@|replace('', @))", e, e),
        _fragment("(@).join(@)", e, e),
    )


EXPRESSIONS = st.recursive(ATOMS, lambda e: _unary(e) | _binary(e), max_leaves=6)


def _statements(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    e = EXPRESSIONS
    return st.one_of(
        _fragment("@@", s, s),
        _fragment("{% for loop_var in @ %}@{% endfor %}", e, s),
        _fragment("{% for loop_var in [[1]] recursive %}@{{ loop([loop_var]) }}{% endfor %}", s),
        _fragment("{% macro f(n) %}@{{ f(n) }}{% endmacro %}{{ f(1) }}", s),
        _fragment("{% macro g(s) %}@{{ s }}{{ s }}{% endmacro %}{% set ns.x = g(ns.x) %}", s),
        _fragment("{% set y %}@{{ ns.x }}{{ ns.x }}{% endset %}{% set ns.x = y %}", s),
        _fragment("{% if @ %}@{% endif %}", e, s),
    )


STATEMENTS = st.recursive(
    _fragment("{{ @ }}", EXPRESSIONS) | _fragment("{% set ns.x = @ %}", EXPRESSIONS),
    _statements,
    max_leaves=5,
)


# Python warns when it compiles the code of a template such as {{ (1)[::-1] }}
@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@FUZZ_SETTINGS
@hypothesis.given(body=STATEMENTS)
def test_random_templates_render_or_fail_cleanly_within_bounds(body):
    template = "{% set ns = namespace(x='ab') %}{% set loop_var = 1 %}" + body
    tracemalloc.start()
    start = time.perf_counter()
    try:
        render_chat(
            template,
            [{"role": "user", "content": "hi"}],
            time_limit=TIME_LIMIT,
            max_output_chars=MAX_OUTPUT,
        )
    except ChatTemplateError:
        pass
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seconds < TIME_LIMIT + TIME_PER_MESSAGE_S + SLACK_S, f"{seconds:.2f} s for {template!r}"
    assert peak < PEAK_BYTES, f"{peak / 2**20:.0f} MiB for {template!r}"
