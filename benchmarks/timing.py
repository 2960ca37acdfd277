"""What the benchmark scripts share: the timing helper, and the name of the processor."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable


def best_of(repeat: int, fn: Callable[[], object], warm: bool = False) -> float:
    """The fastest of ``repeat`` timed calls of ``fn``, in seconds (after one untimed call if ``warm``)."""
    if warm:
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_name() -> str:
    """The processor's model name (``lscpu``'s), for the tables' headers."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
