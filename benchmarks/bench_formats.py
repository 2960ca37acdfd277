"""The `cpu` backend's integer matmul per weight format, against the machine's memory bandwidth.

    python benchmarks/bench_formats.py [--threads 2] [--types Q4_0,Q4_1,...]

For one token (a decode step's matmul), per format:

- in cache: ns per 32-value block and row, one thread, weights that stay in the caches
  (512 x 2048): the kernel's own speed;
- from memory: GB/s of weight bytes, ``--threads`` threads, cycling through weights
  that do not fit in the caches (16384 x 1536 each, ~200 MB in all);
- per byte x Q4_0: time per weight byte against Q4_0's, from memory (the bound asked of
  every format is 1.5).

First it prints what the memory allows: one and ``--threads`` threads each summing part
of a 256 MiB array (numba), and a 256 MiB ``numpy.copyto``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from timing import best_of, cpu_name

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "backends"))

DEFAULT_TYPES = "Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q4_K,Q5_K,Q6_K,IQ4_NL,IQ4_XS"


def memory_bandwidth(threads: int) -> list[tuple[str, float]]:
    """GB/s read by 1 and ``threads`` threads summing a 256 MiB array, and a numpy copy's."""
    import numba
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def read(a, n):
        parts = np.zeros(n)
        for c in prange(n):
            total = 0.0
            for i in range(c * len(a) // n, (c + 1) * len(a) // n):
                total += a[i]
            parts[c] = total
        return parts.sum()

    a = np.ones(256 * 2**20 // 8)
    rows = []
    for n in sorted({1, threads}):
        numba.set_num_threads(n)
        seconds = best_of(5, lambda n=n: read(a, n), warm=True)
        rows.append((f"read, {n} thread(s)", a.nbytes / seconds / 1e9))
    b = np.empty_like(a)
    seconds = best_of(5, lambda: np.copyto(b, a), warm=True)
    rows.append(("numpy.copyto (bytes copied)", a.nbytes / seconds / 1e9))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default=DEFAULT_TYPES)
    a = ap.parse_args()

    from realm.gguf.types import GGMLType
    from realm.testing import random_quant_tensor
    from realm_numba import NumbaBackend

    print(f"{cpu_name()}, {a.threads} threads")
    for name, gbs in memory_bandwidth(a.threads):
        print(f"  memory: {name:<30}{gbs:6.1f} GB/s")
    rng = np.random.default_rng(0)
    one, many = NumbaBackend(n_threads=1), NumbaBackend(n_threads=a.threads)
    print(f"\n{'format':<8}{'bytes/32':>9}{'in cache ns/block-row':>23}{'from memory GB/s':>18}"
          f"{'per byte x Q4_0':>17}")  # fmt: skip
    q4_0_per_byte = None
    for name in a.types.split(","):
        qtype = GGMLType[name]
        m, k = 512, 2048
        small = one.upload_quant(random_quant_tensor(qtype, (m, k), rng), qtype, (m, k), name=name)
        x, out = np.ones((1, k), np.float32), np.empty((1, m), np.float32)
        seconds = best_of(50, lambda w=small, x=x, out=out: one.matmul_q16(x, w, out), warm=True)
        in_cache = seconds / (m * k // 32)
        m, k = 16384, 1536
        raw = random_quant_tensor(qtype, (m, k), rng)
        weights = [many.upload_quant(raw.copy(), qtype, (m, k), name=name) for _ in range(8)]
        x, out = rng.standard_normal((1, k)).astype(np.float32), np.empty((1, m), np.float32)

        def stream(ws=weights, x=x, out=out):
            for w in ws:
                many.matmul_q16(x, w, out)

        nbytes = sum(w.data.nbytes for w in weights)
        per_byte = best_of(5, stream, warm=True) / nbytes
        q4_0_per_byte = q4_0_per_byte or (per_byte if name == "Q4_0" else None)
        ratio = f"{per_byte / q4_0_per_byte:17.2f}" if q4_0_per_byte else f"{'-':>17}"
        bytes_per_block = raw.nbytes / (m * k // 32)
        print(f"{name:<8}{bytes_per_block:>9.1f}{in_cache * 1e9:>23.2f}{1 / per_byte / 1e9:>18.1f}{ratio}")


if __name__ == "__main__":
    main()
