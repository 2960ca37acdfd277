"""Bounded versions of the Jinja2 filters, globals and string methods that can amplify output.

Each computes, before any allocation, how large its result can get from its arguments (a
width, a fill string, a count) and refuses through the render's `Render.check` when that is
over the bound; then it calls Jinja2's or Python's own implementation, so that what it
renders stays exactly what the template's author saw. Every filter, bounded or not, checks
the deadline on entry and has its result admitted (`Render.admit`) on exit.
"""

from __future__ import annotations

import itertools
import json
import pprint
import re
import types
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from jinja2 import pass_environment, pass_eval_context
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.filters import make_attrgetter, make_multi_attrgetter
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

from realm.chat_limits import MAX_NESTING, MAX_RANGE, MAX_WRAP_CHARS, Render, current

# one printf-style conversion: %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)
_DIGITS = re.compile(r"\d+")
# characters that tojson writes as six-character \\u00XX escapes
_JSON_ESCAPED = "<>&'"
# the longest word in Jinja2's lorem ipsum list is 12 letters; with comma, space and tags, 18
_LIPSUM_WORD = 18


def printf_size(r: Render, fmt: str | bytes, args: Any) -> int:
    """An upper bound on the length of ``fmt % args``, refusing '*' widths (taken from args)."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    positional = args if isinstance(args, tuple) else (args,)
    total, used = len(text), 0
    for match in _PRINTF.finditer(text):
        key, width, precision, kind = match.groups()
        if kind == "%":
            continue
        if width == "*" or precision == "*":
            raise r.error("uses a '*' width in '%' formatting, which realm does not allow")
        total += int(width or 0) + int(precision or 0)
        if key is not None and isinstance(args, Mapping):
            value = args.get(key)
        elif used < len(positional):
            value, used = positional[used], used + 1
        else:
            value = None  # too few arguments: Python raises its own error
        total += r.size(value) + 32
        r.check(total, "a '%'-formatted string")
    return total


def format_field_size(r: Render, value: Any, spec: str) -> int:
    """An upper bound on ``format(value, spec)``: the value's text plus any width and precision."""
    return r.size(value) + sum(int(d) for d in _DIGITS.findall(spec)) + 32


def check_method_call(r: Render, method: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a str, bytes or int method call whose result would be over the bound.

    Returns the arguments to call with: ``str.join``'s iterable comes back as a list, since
    its size is counted by going through it.
    """
    owner = getattr(method, "__self__", None)
    if not isinstance(method, types.BuiltinMethodType) or owner is None:
        return args
    name = method.__name__
    if isinstance(owner, int) and not isinstance(owner, bool) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int):
            r.check(length, "int.to_bytes() bytes")
        return args
    if not isinstance(owner, (str, bytes)):
        return args
    size = None
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        size = max(len(owner), args[0])
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int):
            size = len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(tab, 0)
    elif name == "replace" and len(args) >= 2 and all(isinstance(a, (str, bytes)) for a in args[:2]):
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        size = _replaced_size(owner, args[0], args[1], count)
    elif name == "join" and args:
        items = list(r.iterate(args[0]))
        size = sum(r.size(item) for item in items) + len(owner) * max(len(items) - 1, 0)
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        size = len(owner) * max(longest, 1)
    if size is not None:
        r.check(size, f"the result of {type(owner).__name__}.{name}()")
    return args


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def bounded_range(*args: Any) -> range:
    """``range``, refused past `MAX_RANGE` items (as jinja2's sandbox does, as a ChatTemplateError)."""
    items = range(*args)
    try:
        n: int | str = len(items)
    except OverflowError:
        n = "more than 2**63"
    if not isinstance(n, int) or n > MAX_RANGE:
        raise current().error(f"asks for a range of {n} items; at most {MAX_RANGE} are allowed")
    return items


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """``lipsum``, refused when it could write more than the bound (parameter names are jinja2's)."""
    if isinstance(n, int) and isinstance(max, int):
        current().check(n * (max * _LIPSUM_WORD + 16), "lipsum() text")
    return generate_lorem_ipsum(n, html, min, max)


def _center(value: Any, width: int = 80) -> str:
    if isinstance(width, int):
        current().check(max(current().size(value), width), "|center text")
    return DEFAULT_FILTERS["center"](value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    step = len(width) if isinstance(width, str) else width
    if isinstance(step, int):
        current().check(len(text) + (text.count("\n") + 1) * step, "|indent text")
    return DEFAULT_FILTERS["indent"](s, width, first, blank)


@pass_environment
def _wordwrap(
    environment: Any,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = str(s)
    if len(text) > MAX_WRAP_CHARS:
        # textwrap copies the rest of a long word for each line it breaks off: quadratic time
        raise current().error(
            f"asks |wordwrap to wrap {len(text)} characters; at most {MAX_WRAP_CHARS} are allowed"
        )
    joint = environment.newline_sequence if wrapstring is None else wrapstring
    if isinstance(width, int):
        # each line but a paragraph's last, with the next line, is longer than width
        lines = 2 * len(text) // max(width, 1) + text.count("\n") + 2
        current().check(len(text) + lines * len(str(joint)), "|wordwrap text")
    return DEFAULT_FILTERS["wordwrap"](environment, s, width, break_long_words, wrapstring, break_on_hyphens)


@pass_eval_context
def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    size = _replaced_size(str(s), str(old), str(new), -1 if count is None else count)
    current().check(size, "|replace text")
    return DEFAULT_FILTERS["replace"](eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    r = current()
    items = list(r.iterate(value))
    if attribute is not None:
        items = list(map(make_attrgetter(eval_ctx.environment, attribute), items))
    r.check(sum(r.size(item) for item in items) + len(str(d)) * max(len(items) - 1, 0), "|join text")
    return DEFAULT_FILTERS["join"](eval_ctx, items, d)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    printf_size(current(), str(value), kwargs or args)
    return DEFAULT_FILTERS["format"](value, *args, **kwargs)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    if fill_with is not None and isinstance(linecount, int):
        current().check(linecount * (current().size(fill_with) + 2), "a |batch row")
    return DEFAULT_FILTERS["batch"](value, linecount, fill_with)


@pass_eval_context
def _slice(eval_ctx: Any, value: Any, slices: int, fill_with: Any = None) -> Any:
    if isinstance(slices, int) and slices > MAX_RANGE:
        raise current().error(f"asks |slice for {slices} slices; at most {MAX_RANGE} are allowed")
    return DEFAULT_FILTERS["slice"](eval_ctx, value, slices, fill_with)


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: str | int | None = None, start: Any = 0) -> Any:
    r = current()
    items = list(r.iterate(iterable))
    if attribute is not None:
        items = list(map(make_attrgetter(environment, attribute), items))
    if isinstance(start, (list, tuple)):
        r.check(r.size(start) + sum(r.size(item) for item in items), "a |sum of sequences")
        if all(type(item) is type(start) for item in items):
            # what sum() gives, without its quadratic copying of the growing sequence
            return type(start)(itertools.chain(start, *items))
    return sum(items, start)


@pass_environment
def _sort(
    environment: Any,
    value: Any,
    reverse: bool = False,
    case_sensitive: bool = False,
    attribute: str | int | None = None,
) -> list:
    # jinja2's sort, with the deadline checked as each item's key is computed
    r = current()
    key = make_multi_attrgetter(environment, attribute, postprocess=None if case_sensitive else _ignore_case)

    def checked_key(item: Any) -> Any:
        r.tick()
        return key(item)

    return sorted(value, key=checked_key, reverse=reverse)


def _ignore_case(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@pass_eval_context
def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Markup:
    policies = eval_ctx.environment.policies
    if policies["json.dumps_function"] is not None:
        return DEFAULT_FILTERS["tojson"](eval_ctx, value, indent)
    r = current()
    kwargs = dict(policies["json.dumps_kwargs"])
    if indent is not None:
        kwargs["indent"] = indent
        step = len(indent) if isinstance(indent, str) else indent
        if isinstance(step, int):
            # json builds each line's indent string (up to step * depth) before writing it
            r.check(step * (MAX_NESTING + 1), "a |tojson indent")
    # json.dumps(value, **kwargs), chunk by chunk, stopped as soon as it is too long
    parts, size = [], 0
    for chunk in json.JSONEncoder(**kwargs).iterencode(value):
        size += len(chunk)
        r.check(size, "|tojson text")
        parts.append(chunk)
    text = "".join(parts)
    r.check(size + 5 * sum(text.count(c) for c in _JSON_ESCAPED), "|tojson text")
    # the escapes of jinja2.utils.htmlsafe_json_dumps
    for c in _JSON_ESCAPED:
        text = text.replace(c, f"\\u{ord(c):04x}")
    return Markup(text)


class _BoundedWriter:
    """A text stream that refuses to grow past the render's bound."""

    def __init__(self, r: Render, what: str):
        self.r, self.what, self.parts, self.size = r, what, [], 0

    def write(self, text: str) -> None:
        self.size += len(text)
        self.r.check(self.size, self.what)
        self.parts.append(text)


def _pprint(value: Any) -> str:
    # pprint.pformat(value), written to a bounded stream (pprint() adds the final newline)
    out = _BoundedWriter(current(), "|pprint text")
    pprint.PrettyPrinter(stream=out).pprint(value)
    return "".join(out.parts)[:-1]


@pass_eval_context
def _urlize(
    eval_ctx: Any,
    value: Any,
    trim_url_limit: int | None = None,
    nofollow: bool = False,
    target: str | None = None,
    rel: str | None = None,
    extra_schemes: Any = None,
) -> str:
    text = str(value)
    # HTML escaping grows text up to 5x; each word can become a link with its attributes
    extra = len(str(target or "")) + len(str(rel or "")) + 64
    words = text.count(" ") + text.count("\n") + 1
    current().check(10 * len(text) + words * extra, "|urlize text")
    return DEFAULT_FILTERS["urlize"](eval_ctx, value, trim_url_limit, nofollow, target, rel, extra_schemes)


_BOUNDED = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "join": _join,
    "format": _format,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "sort": _sort,
    "tojson": _tojson,
    "pprint": _pprint,
    "urlize": _urlize,
}


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    # functools.wraps copies jinja2's pass_context/pass_eval_context/pass_environment marker
    @wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        r = current()
        r.tick()
        return r.admit(func(*args, **kwargs), "a filter's result")

    return guarded


def bounded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Every filter in ``filters`` guarded, with the bounded versions in place of the amplifying ones."""
    return {name: _guarded(_BOUNDED.get(name, func)) for name, func in filters.items()}
