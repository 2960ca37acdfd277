"""The Jinja2 environment chat templates render in: jinja2's immutable sandbox, with bounds.

jinja2's sandbox keeps a template away from Python's internals but not from hanging or
exhausting the process: nested loops run for ever, ``'x' * 4000000000`` allocates 4 GB and a
recursive macro hits Python's recursion limit. This environment adds the bounds of
`realm.chat_limits` at every place where a template can loop, recurse or build a value:

- each ``for`` loop's iterable (and a recursive loop's next level) checks the deadline per item;
- ``*``, ``+``, ``**`` and ``%`` (intercepted binary operators) refuse results over the bounds
  before computing them, and ``~`` does the same for its parts;
- every call checks the deadline and the call depth, and str/bytes/int methods that can
  amplify (``center``, ``replace``, ``join``, ``to_bytes``...) are sized first;
- list, tuple and dict literals, slices and the results of calls and filters are counted;
- each ``{{ }}`` output and each macro, block or ``{% set %}`` buffer is counted as it is joined;
- ``str.format`` fields, ``range``, ``lipsum`` and the amplifying filters are sized first.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable, Iterator
from functools import update_wrapper
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.runtime import BlockReference, Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from realm.chat_filters import (
    bounded_filters,
    bounded_lipsum,
    bounded_range,
    check_method_call,
    format_field_size,
    printf_size,
)
from realm.chat_limits import Render, current
from realm.errors import ChatTemplateError

_SEQUENCES = (str, bytes, list, tuple)


class BoundedCodeGenerator(CodeGenerator):
    """Compiles templates so that loops, ``~``, literals and slices go through the environment's guards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        current().tick()  # compiling a huge template takes seconds too
        # a for loop's iterable is written inside jinja2's visit_For; wrap it as it is visited
        if id(node) in self._loop_iterables:
            self.write("environment.guard_iter(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def _guard(self, visit: Any, node: nodes.Expr, frame: Frame, hook: str = "guard_value") -> None:
        self.write(f"environment.{hook}(")
        visit(node, frame)
        self.write(")")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables.add(id(node.iter))
        try:
            super().visit_For(node, frame)
        finally:
            self._loop_iterables.discard(id(node.iter))

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # jinja2's own choice of join, passed to the guard with the unconverted parts
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.guard_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._guard(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._guard(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":  # not an assignment target such as {% for a, b in ... %}
            self._guard(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        # jinja2 compiles a slice to plain Python, bypassing the environment's getitem
        if isinstance(node.arg, nodes.Slice):
            self._guard(super().visit_Getitem, node, frame, "guard_slice")
        else:
            super().visit_Getitem(node, frame)


class _CompileDeadline(Extension):
    """Checks the render's deadline at each token the parser reads: compiling is bounded too."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        r = current()
        for token in stream:
            r.tick()
            yield token


class _FieldBound:
    """A str.format() formatter that sizes each field before formatting it."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        r = current()
        r.tick()
        r.check(format_field_size(r, value, format_spec), "a str.format() field")
        text = super().format_field(value, format_spec)  # type: ignore[misc]
        r.charge(len(text))
        return text


class _BoundedFormatter(_FieldBound, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_FieldBound, SandboxedEscapeFormatter):
    pass


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the chat template of {current().source} refused the messages: {message}")


def _check_binop(r: Render, operator: str, left: Any, right: Any) -> int | None:
    """Refuse ``left <operator> right`` when its result would be over the bounds.

    Returns the size of a resulting sequence, where there is one, so that it need not be counted again.
    """
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints:
            r.check_int(left.bit_length() + right.bit_length(), "a product")
        elif isinstance(right, int) and isinstance(left, _SEQUENCES):
            return _check_repeat(r, left, right)
        elif isinstance(left, int) and isinstance(right, _SEQUENCES):
            return _check_repeat(r, right, left)
    elif operator == "+":
        if ints:
            r.check_int(max(left.bit_length(), right.bit_length()) + 1, "a sum")
        elif isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            size = r.size(left) + r.size(right)
            r.check(size, "a '+' concatenation")
            return size
    elif operator == "**":
        if ints and right > 0 and abs(left) > 1:
            r.check_int(left.bit_length() * right, "a power")
    elif operator == "%" and isinstance(left, (str, bytes)):
        printf_size(r, left, right)
    return None


def _check_repeat(r: Render, sequence: Any, times: int) -> int:
    size = r.size(sequence) * max(times, 0) if len(sequence) else 0
    r.check(size, "a '*' repetition")
    return size


def join_bounded(r: Render, chunks: Iterable[str], what: str, advice: str | None = None) -> str:
    """``"".join(chunks)``, refused as soon as the text grows past the bound."""
    parts, size = [], 0
    for chunk in chunks:
        r.tick()
        size += len(chunk)
        if advice is None:
            r.check(size, what)
        elif size > r.max_chars:
            raise r.error(f"produced {what} of more than {r.max_chars} characters", advice)
        parts.append(chunk)
    return "".join(parts)


class ChatSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with Hugging Face's chat-template settings and realm's bounds."""

    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self) -> None:
        # the settings Hugging Face's apply_chat_template uses, so templates render as their authors saw
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols", _CompileDeadline],
            finalize=self.guard_output,
        )
        self.filters = bounded_filters(self.filters)
        self.globals.update(range=bounded_range, lipsum=bounded_lipsum, raise_exception=_raise_exception)

    def guard_output(self, value: Any) -> Any:
        """The environment's finalize: each ``{{ }}`` value, before it is turned into text."""
        r = current()
        r.tick()
        size = len(value) if isinstance(value, str) else r.size(value)
        r.check(size, "the output of one {{ }} expression")
        r.charge(size)
        return value

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """Joins the buffer of each macro, call block, filter block and ``{% set %}`` block."""
        r = current()
        r.tick()
        parts = list(parts)
        size = sum(map(len, parts))
        r.check(size, "the output of a macro or block")
        r.charge(size)
        return "".join(parts)

    def guard_concat(self, join: Any, parts: tuple) -> str:
        r = current()
        r.tick()
        r.check(sum(r.size(part) for part in parts), "a '~' concatenation")
        return r.admit(join(parts), "a '~' concatenation")

    def guard_value(self, value: Any) -> Any:
        r = current()
        r.tick()
        return r.admit(value, "a list or dict")

    def guard_slice(self, value: Any) -> Any:
        r = current()
        r.tick()
        if isinstance(value, (list, tuple)):
            # a slice prints, compares and hashes no larger than what it was cut from; count the copy
            r.charge(8 * len(value))
            return value
        return r.admit(value, "a slice")

    def getitem(self, obj: Any, argument: Any) -> Any:
        current().tick()  # filters such as groupby and sort(attribute=...) look up items per element
        return super().getitem(obj, argument)

    def guard_iter(self, iterable: Any) -> Any:
        return current().iterate(iterable)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        r = current()
        r.tick()
        size = _check_binop(r, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if size is not None and isinstance(result, (list, tuple)):
            r.remember(result, size)
        return r.admit(result, f"the result of '{operator}'")

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        r = current()
        r.tick()
        if isinstance(obj, LoopContext) and args:
            args = (r.iterate(args[0]), *args[1:])  # the next level of a recursive loop
        else:
            args = check_method_call(r, obj, args, kwargs)
        r.enter_call()
        try:
            if isinstance(obj, BlockReference) and self.is_safe_callable(obj):
                result = self._render_block(r, obj)
            else:
                result = super().call(context, obj, *args, **kwargs)
        finally:
            r.leave_call()
        # the text of a macro, recursive loop or block was counted as its buffer was joined
        charge = not isinstance(obj, (Macro, LoopContext, BlockReference))
        return r.admit(result, "a call's result", charge=charge)

    def _render_block(self, r: Render, block: BlockReference) -> str:
        # BlockReference.__call__ (self.name(), super()) joins the block's chunks with a plain
        # "".join that no bound sees; this is the same rendering, joined under the bound
        chunks = block._stack[block._depth](block._context)
        text = join_bounded(r, chunks, "the output of a block")
        r.charge(len(text))
        return Markup(text) if block._context.eval_ctx.autoescape else text

    def wrap_str_format(self, value: Any) -> Any:
        """jinja2's sandboxed ``str.format``/``format_map``, with each field sized first."""
        if (
            not isinstance(value, (types.MethodType, types.BuiltinMethodType))
            or value.__name__ not in ("format", "format_map")
            or not isinstance(value.__self__, str)
        ):
            return None
        text = value.__self__
        if isinstance(text, Markup):
            formatter: SandboxedFormatter = _BoundedEscapeFormatter(self, escape=text.escape)
        else:
            formatter = _BoundedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return type(text)(formatter.vformat(text, args, kwargs))

        return update_wrapper(wrapper, value)


ENVIRONMENT = ChatSandbox()


@functools.lru_cache(maxsize=64)
def compiled(template: str) -> jinja2.Template:
    """``template`` compiled once per process: a server renders the same few templates per request."""
    return ENVIRONMENT.from_string(template)
