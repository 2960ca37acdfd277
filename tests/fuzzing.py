"""Shared pieces of realm's fuzz tests: hypothesis settings, a memory bound, a time bound.

Environment:

- ``REALM_FUZZ_EXAMPLES``: examples per fuzz test (default 150, a few seconds each).
- ``REALM_FUZZ_SEED``: unset, every run tries the same examples (derandomized), so a red
  CI run is a real regression and a rerun reproduces it. Set (to anything, e.g.
  ``random``), each run draws fresh examples; to replay a particular run give pytest
  hypothesis's ``--hypothesis-seed=N``. A long hunt::

      REALM_FUZZ_EXAMPLES=20000 REALM_FUZZ_SEED=random pytest tests/test_fuzz_gguf.py

Decorate a ``@given`` test with ``@FUZZ_SETTINGS``, or ``@settings(FUZZ_SETTINGS, ...)``
to change one setting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("REALM_FUZZ_EXAMPLES", "150"))
FUZZ_RANDOM = bool(os.environ.get("REALM_FUZZ_SEED", "").strip())

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    # Shared CI machines stall for seconds at a time; tests that must be quick bound
    # themselves with time_limit() instead, generously.
    deadline=None,
    derandomize=not FUZZ_RANDOM,
    # No example database in the checkout: a failure prints the blob that reproduces it.
    database=None,
    print_blob=True,
    # Hostile files are built field by field: slow to generate, and large, by design.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class MemoryUse:
    peak: int = 0  # bytes, above what was allocated when the block was entered


@contextlib.contextmanager
def bounded_memory(limit_bytes: int) -> Iterator[MemoryUse]:
    """Fail with AssertionError when the block's peak traced allocation exceeds ``limit_bytes``.

    Counts Python objects and numpy buffers (numpy reports its allocations to
    tracemalloc), not file pages that a mapping merely touches. The check runs even when
    the block raises (a reader may fail late, after allocating), chaining that error.
    Inside another ``bounded_memory`` block it restarts the outer block's peak.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    use = MemoryUse()
    try:
        yield use
    finally:
        use.peak = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()
        if use.peak > limit_bytes:
            raise AssertionError(
                f"peak allocation {use.peak} bytes exceeds the limit of {limit_bytes} bytes"
            )


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with AssertionError when the block runs longer than ``seconds``.

    In the main thread of a POSIX process a timer interrupts a block that hangs (at its
    next Python instruction); elsewhere the time is checked when the block ends. Not
    reentrant: the timer is process-wide.
    """
    message = f"the block ran longer than its time limit of {seconds} s"
    interrupt = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    previous = None
    if interrupt:

        def on_alarm(signum: int, frame: object) -> None:
            raise AssertionError(message + " (interrupted)")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        if interrupt:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    if elapsed > seconds:  # the code under test may have swallowed the interruption
        raise AssertionError(f"{message} ({elapsed:.1f} s)")
