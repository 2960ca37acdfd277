"""GNU OpenMP keeps one worker pool per thread that launches parallel kernels: free ours when done.

numba's OpenMP threading layer (libgomp) gives every thread that starts a parallel region a
pool of its own. While one thread's idle pool lives, a second launching thread's kernels
are slow: on a 2-vCPU EPYC a short parallel region cost ~12 us from the first launching
thread and ~60 us from a second one, because with more managed threads than CPUs libgomp
stops spinning and wakes its workers through futexes (spinning instead, with
``OMP_WAIT_POLICY=active``, was no better: the idle pool then burns the CPUs). The engine
runs its steps on a worker thread after `realm.load` has run the warmup kernels on the
loading thread, which made decoding 2x slower, so a thread that has finished launching
kernels for a while frees its pool with OpenMP 5's ``omp_pause_resource_all``; the next
launch from that thread starts a fresh pool (a fraction of a millisecond).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

OMP_PAUSE_SOFT = 1

_found: list[Callable[[int], int]] = []  # libgomp's omp_pause_resource_all, once it is loaded
_elsewhere: list[str] = []  # the threading layer, once it is known not to be OpenMP


def _pause_resource_all() -> Callable[[int], int] | None:
    """libgomp's ``omp_pause_resource_all``, when numba's parallel kernels run on libgomp.

    Cheap when there is none: before any parallel kernel has run there is no pool to free,
    and a threading layer other than OpenMP is remembered (reading /proc/self/maps each time
    cost ~0.6 ms, and the engine asks on every submit).
    """
    if _found:
        return _found[0]
    if _elsewhere:
        return None
    try:
        import numba

        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run: no worker pool exists yet
        return None
    if layer != "omp":
        _elsewhere.append(layer)
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line}
    except OSError:
        return None
    for path in sorted(paths):
        lib = ctypes.CDLL(path)  # already loaded: this only finds its symbols
        pause = getattr(lib, "omp_pause_resource_all", None)  # GCC 9 and later
        if pause is not None:
            pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
            _found.append(pause)
            return pause
    return None


def release_thread_pool() -> None:
    """Free the calling thread's OpenMP workers; a no-op on other threading layers."""
    pause = _pause_resource_all()
    if pause is not None:
        pause(OMP_PAUSE_SOFT)
