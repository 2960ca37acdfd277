"""Engine throughput: N concurrent greedy requests on one model, against N = 1 and llama.cpp.

Each N runs in a child process of its own (so peak memory is its own). Every request has its
own 128-token prompt (no shared prefix) and generates exactly 128 tokens (end tokens are
ignored). Prints aggregate generated tokens/s and its ratio to N = 1, time to first token and
inter-token latency (median and p95), peak resident memory, and the KV cache's allocated
bytes against ``N x (prompt + generated)`` positions' worth. llama.cpp (llama-cpp-python, one
sequence) decodes the same prompt in the same script, as the single-stream reference.

    python benchmarks/bench_engine.py                              # SmolLM2 and gemma-3, cpu, 2 threads
    python benchmarks/bench_engine.py --models smollm2 --n 1,8 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import _peak_rss_mb, in_child, model_path, prompt_tokens, run_llama_cpp  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_engine(path: str, device: str, threads: int, n: int, n_prompt: int, n_gen: int, q) -> None:
    import realm
    from realm.engine.request import Request
    from realm.generate import SamplingParams

    model = realm.load(path, device=device, n_threads=threads, n_ctx=n_prompt + n_gen)
    base = prompt_tokens(path, n_prompt + n)
    prompts = [base[i : i + n_prompt] for i in range(n)]  # distinct from the first token on
    model.generate(prompts[0][:16], max_tokens=4, temperature=0)  # compile and warm caches
    greedy = SamplingParams(temperature=0)

    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    handles = [model.engine.submit(Request(p, greedy, n_gen, ignore_eos=True)) for p in prompts]
    ttft, itl = [], []
    finished = []

    def read(handle):
        last = None
        for _ in handle:
            now = time.perf_counter()
            if last is None:
                ttft.append(now - t0)
            else:
                itl.append(now - last)
            last = now
        finished.append(time.perf_counter())

    readers = [threading.Thread(target=read, args=(h,)) for h in handles]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    wall = max(finished) - t0
    n_tokens = sum(len(h.tokens) for h in handles)
    assert n_tokens == n * n_gen, n_tokens
    cache = model.transformer.cache
    q.put(
        dict(
            n=n,
            tok_s=n_tokens / wall,
            ttft_med=statistics.median(ttft),
            ttft_p95=_percentile(ttft, 0.95),
            itl_med=statistics.median(itl),
            itl_p95=_percentile(itl, 0.95),
            rss_mb=_peak_rss_mb(),
            rss_growth_mb=_peak_rss_mb() - rss_before,
            kv_ratio=cache.nbytes_allocated() / (n * (n_prompt + n_gen) * cache.bytes_per_position()),
            kv_mb=cache.nbytes_allocated() / 2**20,
        )
    )


def cpu_name() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", default="1,2,4,8,16", help="concurrent requests, comma list")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--generate", type=int, default=128)
    a = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    print(
        f"{time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} CPUs, {a.threads} threads, "
        f"device {a.device}, prompts {a.prompt} tokens, {a.generate} generated each, greedy"
    )
    for name in a.models.split(","):
        path = model_path(name)
        peer = None
        if find_spec("llama_cpp") is not None:
            ids = prompt_tokens(path, a.prompt)
            peer = in_child(run_llama_cpp, path, a.threads, ids, a.generate, 1)
        rows = [
            in_child(run_engine, path, a.device, a.threads, int(n), a.prompt, a.generate)
            for n in a.n.split(",")
        ]
        print(
            f"\n{os.path.basename(path)}"
            + (f"  (llama.cpp, one sequence: decode {peer['decode']:.1f} tok/s)" if peer else "")
        )
        head = (
            f"{'N':>3}{'gen tok/s':>11}{'x N=1':>7}{'x llama.cpp':>13}{'TTFT med s':>12}{'TTFT p95 s':>12}"
            f"{'ITL med ms':>12}{'ITL p95 ms':>12}{'peak RSS MB':>13}{'KV MB':>8}{'KV / needed':>13}"
        )
        print(head)
        for r in rows:
            vs_peer = f"{r['tok_s'] / peer['decode']:>13.2f}" if peer else f"{'-':>13}"
            print(
                f"{r['n']:>3}{r['tok_s']:>11.1f}{r['tok_s'] / rows[0]['tok_s']:>7.2f}{vs_peer}"
                f"{r['ttft_med']:>12.2f}{r['ttft_p95']:>12.2f}{1000 * r['itl_med']:>12.1f}"
                f"{1000 * r['itl_p95']:>12.1f}{r['rss_mb']:>13.0f}{r['kv_mb']:>8.1f}{r['kv_ratio']:>13.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
