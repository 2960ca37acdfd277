"""Decode speed when another process keeps a CPU busy: default threads against fixed counts.

Each cell runs in a child process of its own: load SmolLM2 (or --model) on ``cpu``, warm
up, prefill a short prompt, then time greedy decode steps. The competing process is a
Python busy loop pinned to one of this process's CPUs, started by the script before the
child loads ("busy"), or only after the child has loaded and warmed up ("busy after
load"), and killed after each cell. llama.cpp (llama-cpp-python) runs under the same
conditions when it is installed.

    python benchmarks/bench_contention.py                  # default, 2 (explicit) and 1 thread
    python benchmarks/bench_contention.py --threads 1 --decode 64 --reps 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import time
from importlib.util import find_spec

from timing import cpu_name

CONDITIONS = ("quiet", "busy", "busy after load")
# A repetition stops after this many seconds even if not all decode steps ran: a slow
# cell (fixed threads under contention, ~1 tok/s) would otherwise take minutes.
REP_SECONDS = 8.0


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def start_busy() -> subprocess.Popen:
    """A busy loop pinned to the last CPU this process may use (where the OS allows pinning)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(busy.pid, {_cpus()[-1]})
    return busy


def _tokens_per_second(step, first: int, n_decode: int) -> float:
    token, done = first, 0
    t0 = time.perf_counter()
    deadline = t0 + REP_SECONDS
    while done < n_decode and (done == 0 or time.perf_counter() < deadline):
        token = step(token)
        done += 1
    return done / (time.perf_counter() - t0)


PROMPT = list(range(1, 17))


def _decode_realm(path: str, threads: int | None, n_decode: int, reps: int, ready, go, q) -> None:
    import realm

    model = realm.load(path, device="cpu", n_threads=threads, n_ctx=64 + n_decode, n_batch=16)
    t = model.transformer
    t.reset()
    t.eval(PROMPT)  # compiles or loads every kernel this model needs
    t.eval([1])
    ready.set()
    go.wait()
    speeds = []
    for _ in range(reps):
        t.reset()
        first = int(t.eval(PROMPT)[-1].argmax())
        speeds.append(_tokens_per_second(lambda tok: int(t.eval([tok])[-1].argmax()), first, n_decode))
    q.put((statistics.median(speeds), getattr(model.backend, "threads_now", threads)))


def _decode_llama_cpp(path: str, threads: int | None, n_decode: int, reps: int, ready, go, q) -> None:
    from llama_cpp import Llama

    n_ctx = 64 + n_decode
    llm = Llama(path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm.eval(PROMPT)
    ready.set()
    go.wait()

    def step(token: int) -> int:
        llm.eval([token])
        return int(llm.scores[llm.n_tokens - 1].argmax())

    speeds = []
    for _ in range(reps):
        llm.reset()
        llm.eval(PROMPT)
        speeds.append(_tokens_per_second(step, int(llm.scores[llm.n_tokens - 1].argmax()), n_decode))
    q.put((statistics.median(speeds), threads))


def run_cell(target, path: str, threads: int | None, condition: str, n_decode: int, reps: int):
    """(median tok/s, threads in use at the end) for one engine, thread count and condition."""
    ctx = mp.get_context("spawn")
    q, ready, go = ctx.Queue(), ctx.Event(), ctx.Event()
    busy = start_busy() if condition == "busy" else None
    child = ctx.Process(target=target, args=(path, threads, n_decode, reps, ready, go, q))
    try:
        child.start()
        while not ready.wait(timeout=1.0):
            if not child.is_alive():
                raise RuntimeError(f"{target.__name__} exited with code {child.exitcode} while loading")
        if condition == "busy after load":
            busy = start_busy()
            time.sleep(0.1)  # let it take its core before decoding starts
        go.set()
        while True:
            try:
                result = q.get(timeout=1.0)
                break
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"{target.__name__} exited with code {child.exitcode}") from None
        child.join()
        return result
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        if child.is_alive():
            child.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="smollm2 or a .gguf path")
    ap.add_argument("--threads", default="2,1", help="explicit thread counts besides the default (2,1)")
    ap.add_argument("--decode", type=int, default=48, help="decode steps per repetition (default 48)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per cell, median reported (default 3)")
    a = ap.parse_args(argv)
    from realm.models_on_pypi import smollm2_path

    path = str(smollm2_path()) if a.model == "smollm2" else a.model
    counts: list[int | None] = [None] + [int(n) for n in a.threads.split(",") if n]
    engines = [("realm cpu", _decode_realm)]
    if find_spec("llama_cpp") is not None:
        engines.append(("llama.cpp", _decode_llama_cpp))
    else:
        print("llama-cpp-python is not installed: no llama.cpp rows (see shared/PEERS.md)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_name()}, {len(_cpus())} CPUs, load average {load:.2f} at start; "
          f"model {os.path.basename(path)}, decode {a.decode} tokens, median of {a.reps}")
    rows = []
    for name, target in engines:
        for n in counts:
            if name == "llama.cpp" and n is None:
                continue  # llama.cpp has no adaptive default; its rows are the fixed counts
            cells = [run_cell(target, path, n, c, a.decode, a.reps) for c in CONDITIONS]
            rows.append((name, "default" if n is None else str(n), cells))
    print(f"\n| engine | threads | {' | '.join(c + ' tok/s' for c in CONDITIONS)} |")
    print("|---|---|" + "---|" * len(CONDITIONS))
    for name, label, cells in rows:
        shown = []
        for speed, used in cells:
            note = f" ({used} used)" if label == "default" and used is not None else ""
            shown.append(f"{speed:.1f}{note}")
        print(f"| {name} | {label} | {' | '.join(shown)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
