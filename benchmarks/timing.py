"""The one timing helper the benchmark scripts share."""

from __future__ import annotations

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
