"""What a batch of rows costs the ``cpu`` backend's matmul, against one row.

For each model: the seven matmuls of layer 0 (``attn_q`` .. ``ffn_down``) called with
``n`` rows of x, and whole-model passes of ``n`` tokens after ``reset()`` (``n = 1`` is a
decode step; ``n = 2..16`` stands in for a batched decode step; 128 is a prompt's
prefill). Best of ``--reps`` after a warm call; ms per call and per row.

    python benchmarks/bench_batch_matmul.py                      # both PyPI models, 2 threads
    python benchmarks/bench_batch_matmul.py --model smollm2 --reps 20 --threads 1

To compare with another version of the backend, run it again with ``PYTHONPATH`` at that
checkout's ``backends/`` (results: docs/performance.md, "Batch-invariant matmul").
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from timing import best_of, cpu_name

import realm
from realm.models_on_pypi import gemma3_path, smollm2_path

MODELS = {"smollm2": smollm2_path, "gemma3": gemma3_path}
LAYER_MATMULS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def bench_model(name: str, ns: list[int], reps: int, threads: int) -> None:
    model = realm.load(MODELS[name](), device="cpu", n_threads=threads)
    t, be = model.transformer, model.transformer.backend
    rng = np.random.default_rng(0)
    layer = t.w.layers[0]
    print(f"\n{name}: layer-0 matmuls ({', '.join(LAYER_MATMULS)}) and whole-model passes")
    print(f"{'n':>5} {'layer ms':>9} {'/row':>8} {'x n=1':>6} {'model ms':>9} {'/row':>8} {'x n=1':>6}")
    base = None
    for n in ns:
        outs = []
        for key in LAYER_MATMULS:
            w = layer[key]
            x = rng.standard_normal((n, w.shape[1])).astype(np.float32)
            outs.append((x, w, np.empty((n, w.shape[0]), np.float32)))

        def matmuls(outs=outs) -> None:
            for x, w, out in outs:
                be.matmul(x, w, out)

        ids = [int(i) for i in rng.integers(100, 1000, n)]

        def passes(ids=ids) -> None:
            t.reset()
            t.eval(ids)

        mm = best_of(reps, matmuls, warm=True) * 1e3
        whole = best_of(max(2, reps // (1 + n // 16)), passes, warm=True) * 1e3
        base = base or (mm, whole)
        print(
            f"{n:>5} {mm:>9.3f} {mm / n:>8.3f} {mm / base[0]:>6.2f} "
            f"{whole:>9.2f} {whole / n:>8.3f} {whole / base[1]:>6.2f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2,gemma3", help="comma-separated: smollm2, gemma3")
    ap.add_argument("--n", default="1,2,4,8,16,128", help="comma-separated row counts")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"{cpu_name()}, {args.threads} threads, numba backend; python {sys.version.split()[0]}")
    for name in args.model.split(","):
        bench_model(name, [int(n) for n in args.n.split(",")], args.reps, args.threads)


if __name__ == "__main__":
    main()
