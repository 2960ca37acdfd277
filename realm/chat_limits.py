"""The bounds on rendering a chat template, and the per-render state that enforces them.

A chat template comes from the model file, so it is untrusted input, and a server renders
one per request. Real templates (ChatML, Llama 3, Gemma 3, Qwen with tools) render a
conversation in milliseconds, a few thousand messages in well under a second, and build
nothing much larger than their output, so the bounds sit well above what they need and far
below what hangs or exhausts a process.

The state lives in a context variable, so that renders in different threads (or asyncio
tasks) of one server each have their own deadline and budgets.
"""

from __future__ import annotations

import contextvars
import itertools
import time
import types
from collections.abc import Iterator, MappingView
from contextlib import contextmanager
from typing import Any

from jinja2.utils import Namespace

from realm.errors import ChatTemplateError

# Wall-clock seconds for compiling plus rendering, plus TIME_PER_MESSAGE_S for each message.
# Real templates do a fixed amount of work per message: on a slow, shared 2-core machine
# ChatML-style templates take about 0.02 ms per message, Qwen3's (which looks at each message
# several times through jinja2's slow sandboxed attribute access) up to 0.2 ms, and compiling
# a 4 KB template 50 ms. 2 s plus 1 ms per message leaves a margin of five or more for any
# conversation, and stops a hostile template given a short one within about 2 s.
TIME_LIMIT_S = 2.0
TIME_PER_MESSAGE_S = 0.001

# Characters of rendered prompt. 4M characters is about 1M tokens, the longest context of
# any current model; larger prompts are refused, never truncated. Also the most any single
# value the template builds (a string, or a list or dict counted as its printed text) may hold.
MAX_OUTPUT_CHARS = 4_000_000

# Text the template may build over one render, counting every intermediate string (a list
# or dict slot counts as 8, the bytes of its pointer), as a multiple of the output bound.
# Bounds the memory a template can hold at once across many names and buffers: 32M
# characters at the default bound. Real templates build about 4x their output for a long
# conversation ('<|im_start|>' + role + '\n' + content + ... copies each message three
# times, printing it a fourth), at most 6x for a short one; 8x leaves room to spare.
WORK_FACTOR = 8

# Nested calls (macros, methods, recursive loops, blocks). Real templates nest a few
# levels (a tool-schema macro perhaps ten); each level costs about six Python frames, so
# 64 stays far below Python's own recursion limit of 1000 even from a deep caller stack.
MAX_CALL_DEPTH = 64

# Nesting of lists and dicts that the template builds: a JSON schema nests ten levels or
# so; the bound keeps printing, comparing and hashing them out of Python's recursion limit.
MAX_NESTING = 64

# Items of a range() (jinja2.sandbox.MAX_RANGE, the sandbox's own choice), and of the
# slices of |slice: a template loops over messages, never over 100,000 of anything.
MAX_RANGE = 100_000

# Characters |wordwrap wraps in one call: textwrap's time grows with the square of a long
# word's length, and no chat template wraps text at all.
MAX_WRAP_CHARS = 50_000

# Bits of an integer the template computes: a little above the 4300 decimal digits that
# Python will print, and small enough that multiplying two of them takes microseconds.
MAX_INT_BITS = 16_384

# Sizes of lists and dicts remembered per render, so that building a list out of earlier
# lists costs only the new items; cleared when full, which only costs a re-count.
_SIZE_CACHE = 4096

# How often (in items counted) a long size count checks the deadline.
_TICK_EVERY = 1024

# Printed size assumed for an object that is neither a string, number, list nor dict
# (a macro, a loop, a generator): its repr is one short line.
_OBJECT_CHARS = 64

_TIME_ADVICE = (
    "real chat templates need a fraction of that, so this one loops without end or was made to "
    "exhaust the process; fix the template or pass a working one as chat_template="
)
_FIX_ADVICE = "fix the template or pass a working one as chat_template="
_SIZE_ADVICE = f"{_FIX_ADVICE}, or, if the conversation really is this long, pass a larger max_output_chars"


class Render:
    """The deadline, budgets and call depth of one render; raises `ChatTemplateError` at a bound."""

    def __init__(self, source: str, time_limit: float, max_chars: int):
        self.source = source
        self.time_limit = time_limit
        self.deadline = time.monotonic() + time_limit
        self.max_chars = max_chars
        self.work_left = WORK_FACTOR * max_chars
        self.depth = 0
        self._sizes: dict[int, tuple[Any, int]] = {}
        self._counted = 0

    def error(self, what: str, advice: str = _FIX_ADVICE) -> ChatTemplateError:
        return ChatTemplateError(f"the chat template of {self.source} {what}; {advice}")

    def tick(self) -> None:
        """Stop the render once it is past its deadline."""
        if time.monotonic() > self.deadline:
            raise self.error(f"ran longer than {self.time_limit:g} s and was stopped", _TIME_ADVICE)

    def check(self, chars: int, what: str) -> None:
        """Refuse to build ``what`` when it would hold more than ``max_chars`` characters."""
        if chars > self.max_chars:
            raise self.error(
                f"would build {what} of {chars} characters, more than the {self.max_chars} allowed",
                _SIZE_ADVICE,
            )

    def charge(self, chars: int) -> None:
        """Count ``chars`` of newly built text against the render's total."""
        self.work_left -= chars
        if self.work_left < 0:
            raise self.error(
                f"built more than {WORK_FACTOR * self.max_chars} characters of text in total "
                f"({WORK_FACTOR}x the {self.max_chars}-character output bound)",
                _SIZE_ADVICE,
            )

    def check_int(self, bits: int, what: str) -> None:
        if bits > MAX_INT_BITS:
            raise self.error(f"would compute {what} of about {bits} bits, more than {MAX_INT_BITS}")

    def enter_call(self) -> None:
        if self.depth >= MAX_CALL_DEPTH:
            raise self.error(
                f"nests calls more than {MAX_CALL_DEPTH} deep (a macro or loop that recurses "
                "without end?)"
            )
        self.depth += 1

    def leave_call(self) -> None:
        self.depth -= 1

    def size(self, value: Any, depth: int = 0) -> int:
        """About how many characters ``str(value)`` has; raises once that exceeds ``max_chars``.

        Counts each occurrence of a shared list, so a list built by doubling (``[a, a]`` in a
        loop) is counted as large as it prints, compares and hashes; the count stops at the
        bound, so it costs at most ``max_chars / 2`` steps.
        """
        if isinstance(value, str):
            return len(value)
        if isinstance(value, (bytes, bytearray)):
            return 4 * len(value)  # repr escapes a byte as \\xNN
        if isinstance(value, bool) or value is None:
            return 5
        if isinstance(value, int):
            return value.bit_length() // 3 + 2
        if isinstance(value, float):
            return 24
        if isinstance(value, (list, tuple, dict)):
            hit = self._sizes.get(id(value))
            if hit is not None and hit[0] is value:
                return hit[1]
            children = itertools.chain.from_iterable(value.items()) if isinstance(value, dict) else value
            total = self._count(children, depth)
            # lists and dicts are immutable in the sandbox, so their sizes stay true
            self.remember(value, total)
            return total
        if isinstance(value, Namespace):
            # a namespace prints its attributes; it is mutable, so it is counted afresh each time
            attrs = getattr(value, "_Namespace__attrs", {})
            return self._count(itertools.chain.from_iterable(attrs.items()), depth)
        if isinstance(value, MappingView):
            return self._count(value, depth)
        return _OBJECT_CHARS

    def _count(self, children: Any, depth: int) -> int:
        if depth >= MAX_NESTING:
            raise self.error(f"nests lists or dicts more than {MAX_NESTING} deep")
        total = 2
        for child in children:
            self._counted += 1
            if self._counted % _TICK_EVERY == 0:
                self.tick()
            total += self.size(child, depth + 1) + 2
            self.check(total, "a list or dict (as text)")
        return total

    def remember(self, value: Any, size: int) -> None:
        """Record the size of a list or tuple built from parts already counted (``a + b``, ``a * 3``)."""
        if len(self._sizes) >= _SIZE_CACHE:
            self._sizes.clear()
        self._sizes[id(value)] = (value, size)

    def admit(self, value: Any, what: str = "a value", charge: bool = True) -> Any:
        """Check a value the template just built against the bounds, count it, and return it.

        A generator (from a filter such as map or slice) comes back wrapped so that each item
        it yields checks the deadline and the count of items stays bounded.
        """
        if isinstance(value, str):
            self.check(len(value), what)
            if charge:
                self.charge(len(value))
        elif isinstance(value, (list, tuple, dict)):
            self.size(value)
            if charge:
                self.charge(8 * len(value))
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            self.check_int(value.bit_length(), "an integer")
        elif isinstance(value, (bytes, bytearray)):
            self.check(len(value), what)
            if charge:
                self.charge(len(value))
        elif isinstance(value, types.GeneratorType):
            return self.iterate(value, self.max_chars // 2)
        return value

    def iterate(self, iterable: Any, max_items: int | None = None) -> Iterator[Any]:
        """Yield ``iterable``'s items, checking the deadline at each and, if given, their count."""
        for n, item in enumerate(iterable, 1):
            self.tick()
            if max_items is not None and n > max_items:
                raise self.error(f"made a sequence of more than {max_items} items")
            yield item


_CURRENT: contextvars.ContextVar[Render | None] = contextvars.ContextVar("realm_chat_render", default=None)


@contextmanager
def rendering(render: Render) -> Iterator[Render]:
    """Make ``render`` the state that the sandbox's checks use while the block runs."""
    token = _CURRENT.set(render)
    try:
        yield render
    finally:
        _CURRENT.reset(token)


def current() -> Render:
    """The render in progress; outside one (the sandbox used directly), a fresh one at the defaults."""
    render = _CURRENT.get()
    return render if render is not None else Render("a chat template", TIME_LIMIT_S, MAX_OUTPUT_CHARS)
