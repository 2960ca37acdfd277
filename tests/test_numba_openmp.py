"""The cpu backend frees the OpenMP workers of a thread that is done launching kernels.

GNU OpenMP keeps a worker pool per launching thread; while the loading thread's pool lives,
the engine's worker thread launches its kernels several times slower (backends/realm_numba/
openmp.py). Seen from outside: the process's OS threads. Run in a fresh process, so that no
other test's kernels have made pools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import load_backend

SCRIPT = textwrap.dedent(
    """
    import json, os, numpy as np
    import realm
    from realm.backend import get_backend
    from realm.models_on_pypi import smollm2_path

    def threads():
        return len(os.listdir("/proc/self/task"))

    be = get_backend("cpu", n_threads=2)
    x, w, out = np.ones((3, 64), np.float32), np.ones((256, 64), np.float32), np.empty((3, 256), np.float32)
    before = threads()
    be.matmul(x, w, out)                       # a parallel kernel: this thread gets a pool
    with_pool = threads()
    be.release_threads()
    released = threads()
    be.matmul(x, w, out)                       # and a fresh one when it launches again
    again = threads()
    be.release_threads()
    model = realm.load(smollm2_path(), device="cpu", n_threads=2)   # warms up, then releases
    after_load = threads()
    print(json.dumps(dict(before=before, with_pool=with_pool, released=released, again=again,
                          after_load=after_load)))
    """
)


def test_release_threads_frees_the_calling_threads_openmp_pool():
    load_backend("cpu")
    env = dict(os.environ, NUMBA_NUM_THREADS="2", NUMBA_THREADING_LAYER="omp")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["with_pool"] > counts["before"]  # the pool's worker thread appeared
    assert counts["released"] == counts["before"]  # and is gone
    assert counts["again"] == counts["with_pool"]  # launching again works (a new pool)
    assert counts["after_load"] == counts["before"]  # realm.load leaves no pool behind


def test_no_pool_to_free_is_found_without_reading_the_process_maps(monkeypatch):
    """`Engine.submit` asks on every request: with another threading layer, or before any
    parallel kernel ran, the answer comes without reading /proc/self/maps (~0.6 ms)."""
    import builtins

    import numba

    from realm_numba import openmp

    monkeypatch.setattr(openmp, "_found", [])
    monkeypatch.setattr(openmp, "_elsewhere", [])
    real_open = builtins.open

    def no_maps(path, *args, **kwargs):
        assert path != "/proc/self/maps", "read the process maps"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_maps)

    def not_started():
        raise ValueError("Threading layer is not initialized.")

    monkeypatch.setattr(numba, "threading_layer", not_started)
    assert openmp._pause_resource_all() is None
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    assert openmp._pause_resource_all() is None
    assert openmp._elsewhere == ["workqueue"]
    openmp.release_thread_pool()  # a no-op there
