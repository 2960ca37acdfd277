"""Say on stderr, once per process, that the CPU kernels are being compiled.

A cold compile takes 30-60 s and would otherwise look like a hang. numba's
``numba:compile`` event fires only when a kernel is really compiled, i.e. after its
on-disk cache missed (no cache yet, a changed source, a new type signature), so a process
that loads every kernel from the cache prints nothing.
"""

from __future__ import annotations

import sys
import threading

MESSAGE = "realm: compiling CPU kernels (first run only, about a minute) ..."


class CompileNotice:
    """Counts this package's kernel compiles and prints `MESSAGE` at the first one."""

    def __init__(self) -> None:
        self.compiled = 0
        self.said = False
        self.quiet = 0  # > 0 while a caller asked for no output (see `silenced`)
        self._lock = threading.Lock()

    def kernel_compiling(self, module: str) -> None:
        if not module.startswith("realm_numba"):
            return  # the user's own numba functions are none of our business
        with self._lock:
            self.compiled += 1
            if self.said or self.quiet or sys.stderr is None:
                return
            self.said = True
        print(MESSAGE, file=sys.stderr, flush=True)


NOTICE = CompileNotice()
_installed = False


def install_compile_notice() -> None:
    """Register `NOTICE` with numba's event API (once per process)."""
    global _installed
    if _installed:
        return
    from numba.core import event

    class _Listener(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            dispatcher = (ev.data or {}).get("dispatcher")
            py_func = getattr(dispatcher, "py_func", None)
            NOTICE.kernel_compiling(getattr(py_func, "__module__", "") or "")

        def on_end(self, ev: event.Event) -> None:
            pass

    event.register("numba:compile", _Listener())
    _installed = True
