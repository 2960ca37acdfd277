"""Time each backend op on the numba "cpu" backend against the numpy reference.

    python benchmarks/bench_ops.py [--threads N] [--repeat R] [--cold] [--types Q4_1,Q8_0]

Shapes are SmolLM2-135M's: decode is one token (x [1, 576] @ w [1536, 576].T), prefill
is 128 tokens. Formats with 256-element blocks use k = 512 (576 is not a multiple of
256). Prints the compile time of `NumbaBackend.warmup()` first (``--cold`` compiles into
an empty cache so that this is the full compile time, not a cache load), then one row
per op, type and batch: the best of R wall-clock times on each backend and the ratio
numpy / cpu (above 1: the cpu backend is faster).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "backends"))

from benchmarks.timing import best_of  # noqa: E402

N_EMBD, N_FF, N_HEAD, N_KV_HEAD, HEAD_DIM, N_CTX = 576, 1536, 9, 3, 64, 512
PREFILL = 128
DEFAULT_TYPES = "F32,F16,Q4_0,Q4_1,Q5_0,Q8_0,Q4_K,Q5_K,Q6_K,Q2_K,IQ4_NL"


def activation_cases(n: int, emb, rng) -> list:
    """(op, type, shape, make) for every op but matmul at batch ``n``; ``make(backend)``
    uploads the inputs and returns the call to time."""
    import numpy as np

    from realm.backend import RopeMode
    from realm.gguf.types import GGMLType

    ids_host = rng.integers(0, emb.shape[0], n).astype(np.int32)
    hidden = rng.standard_normal((n, N_EMBD)).astype(np.float32)
    ff = rng.standard_normal((n, N_FF)).astype(np.float32)
    heads = rng.standard_normal((n, N_HEAD, HEAD_DIM)).astype(np.float32)
    cache_host = rng.standard_normal((N_CTX, N_KV_HEAD, HEAD_DIM)).astype(np.float32)
    n_past = PREFILL - 1 if n == 1 else 0  # decode: the token after a 127-token prompt

    def get_rows(be):
        w = be.upload_quant(emb, GGMLType.Q8_0, (emb.shape[0], N_EMBD))
        ids, out = be.upload(ids_host), be.empty((n, N_EMBD))
        return lambda: be.get_rows(w, ids, out)

    def rms_norm(be):
        x, w, out = be.upload(hidden), be.upload(np.ones(N_EMBD, np.float32)), be.empty(hidden.shape)
        return lambda: be.rms_norm(x, w, 1e-5, out)

    def rope(be):
        x, pos = be.upload(heads), be.upload(np.arange(n, dtype=np.int32) + n_past)
        return lambda: be.rope(x, pos, HEAD_DIM, 10000.0, RopeMode.NEOX, x)

    def attention(be):
        q, kv, out = be.upload(heads), be.upload(cache_host), be.empty(heads.shape)
        return lambda: be.attention(q, kv, kv, n_past, HEAD_DIM**-0.5, out)

    def gated(op):
        def make(be):
            g, u, out = be.upload(ff), be.upload(ff), be.empty(ff.shape)
            return lambda: getattr(be, op)(g, u, out)

        return make

    def add(be):
        a, out = be.upload(hidden), be.empty(hidden.shape)
        return lambda: be.add(a, a, out)

    def scale(be):
        a, out = be.upload(hidden), be.empty(hidden.shape)
        return lambda: be.scale(a, 0.5, out)

    def copy_rows(be):
        src, dst = be.upload(heads[:, :N_KV_HEAD]), be.upload(cache_host)
        return lambda: be.copy_rows(src, dst, n_past)

    return [
        ("get_rows", "Q8_0", f"{n} of [{emb.shape[0]},{N_EMBD}]", get_rows),
        ("rms_norm", "f32", f"[{n},{N_EMBD}]", rms_norm),
        ("rope", "NEOX", f"[{n},{N_HEAD},{HEAD_DIM}]", rope),
        ("attention", f"{N_HEAD}/{N_KV_HEAD} heads", f"n={n}, n_past={n_past}", attention),
        ("swiglu", "f32", f"[{n},{N_FF}]", gated("swiglu")),
        ("geglu", "f32", f"[{n},{N_FF}]", gated("geglu")),
        ("add", "f32", f"[{n},{N_EMBD}]", add),
        ("scale", "f32", f"[{n},{N_EMBD}]", scale),
        ("copy_rows", "f32", f"{n} rows of [{N_KV_HEAD},{HEAD_DIM}]", copy_rows),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="cpu backend threads")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per case")
    parser.add_argument(
        "--cold", action="store_true", help="compile into an empty numba cache (measures full compile time)"
    )
    parser.add_argument("--types", default=DEFAULT_TYPES, help="matmul weight types")
    args = parser.parse_args()
    if args.cold:  # must be set before numba is imported
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="realm-numba-cache-")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see tests/conftest.py

    import numpy as np

    from realm.gguf.types import GGMLType, type_traits
    from realm.testing import random_quant_tensor
    from realm_numba import NumbaBackend
    from realm_numpy import NumpyBackend

    cpu = NumbaBackend(n_threads=args.threads)
    ref = NumpyBackend()
    start = time.perf_counter()
    groups = cpu.warmup()
    compile_s = time.perf_counter() - start
    print(
        f"# {platform.processor() or platform.machine()}, {cpu.n_threads} cpu-backend threads, "
        f"numpy {np.__version__}"
    )
    print(
        f"# warmup ({'cold cache: compile' if args.cold else 'compile or cache load'}): "
        f"{compile_s:.2f} s; slowest groups: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:4])
    )

    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, str, float, float]] = []

    def case(op: str, what: str, shape: str, make: Callable[[object], Callable[[], object]]):
        t_cpu = best_of(args.repeat, make(cpu), warm=True)
        t_ref = best_of(max(2, args.repeat // 5), make(ref), warm=True)
        rows.append((op, what, shape, t_cpu, t_ref))

    for name in [t.strip() for t in args.types.split(",") if t.strip()]:
        qtype = GGMLType[name]
        k = N_EMBD if type_traits(qtype).block_size <= 64 else 512
        raw = random_quant_tensor(qtype, (N_FF, k), rng)
        for n in (1, PREFILL):
            x_host = rng.standard_normal((n, k)).astype(np.float32)

            def make(be, raw=raw, qtype=qtype, k=k, n=n, x_host=x_host):
                w = be.upload_quant(raw, qtype, (N_FF, k))
                x, out = be.upload(x_host), be.empty((n, N_FF))
                return lambda: be.matmul(x, w, out)

            case("matmul", name, f"[{n},{k}]x[{N_FF},{k}]", make)

    emb = random_quant_tensor(GGMLType.Q8_0, (49152, N_EMBD), rng)
    for n in (1, PREFILL):
        for op, what, shape, make in activation_cases(n, emb, rng):
            case(op, what, shape, make)

    print(f"{'op':<10} {'type':<12} {'shape':<28} {'cpu (us)':>10} {'numpy (us)':>11} {'numpy/cpu':>9}")
    for op, what, shape, t_cpu, t_ref in rows:
        print(
            f"{op:<10} {what:<12} {shape:<28} {t_cpu * 1e6:>10.1f} {t_ref * 1e6:>11.1f} {t_ref / t_cpu:>9.1f}"
        )


if __name__ == "__main__":
    main()
