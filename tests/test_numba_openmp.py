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
