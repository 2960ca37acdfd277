"""Engine throughput: N concurrent greedy requests on one model, against N = 1 and llama.cpp.

Each N runs in a child process of its own (so peak memory is its own). Every request has its
own 128-token prompt (no shared prefix) and generates exactly 128 tokens (end tokens are
ignored); one asyncio loop reads all the streams, as a server would. Prints aggregate
generated tokens/s end to end (prefill included) and while every request decodes (from the
last first token on) with its ratio to N = 1, time to first token and inter-token latency
(median and p95), peak resident memory, and the KV cache's allocated bytes against
``N x (prompt + generated)`` positions' worth. llama.cpp (llama-cpp-python, one sequence)
decodes the same prompt in the same script, as the single-stream reference. Last, each
engine's prefill rate against its one-sequence decode: the ceiling of batched decode on
this machine (`_ceiling`).

    python benchmarks/bench_engine.py                              # SmolLM2 and gemma-3, cpu, 2 threads
    python benchmarks/bench_engine.py --models smollm2 --n 1,8 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import _peak_rss_mb, in_child, model_path, prompt_tokens, run_llama_cpp  # noqa: E402
from timing import cpu_name  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_engine(path: str, device: str, threads: int, n: int, n_prompt: int, n_gen: int, reps: int, q) -> None:
    import realm

    model = realm.load(path, device=device, n_threads=threads, n_ctx=n_prompt + n_gen)
    # Distinct prompts, from the first token on, for every request of every run: a run must
    # not find the previous run's prompts in the prefix cache.
    base = prompt_tokens(path, n_prompt + n * reps + 1)
    model.generate(base[-16:], max_tokens=4, temperature=0)  # compile and warm caches
    best = None
    for rep in range(reps):
        prompts = [base[rep * n + i : rep * n + i + n_prompt] for i in range(n)]
        run = asyncio.run(_one_run(model, prompts, n_gen))
        if best is None or run["decode_tok_s"] > best["decode_tok_s"]:
            best = run
    cache = model.transformer.cache
    q.put(
        dict(
            n=n,
            **best,
            rss_mb=_peak_rss_mb(),
            kv_ratio=cache.nbytes_allocated() / (n * (n_prompt + n_gen) * cache.bytes_per_position()),
            kv_mb=cache.nbytes_allocated() / 2**20,
        )
    )


async def _one_run(model, prompts: list[list[int]], n_gen: int) -> dict:
    """All requests submitted at once, read by one asyncio loop (as a server reads them)."""
    from realm.engine.request import Request
    from realm.generate import SamplingParams

    greedy = SamplingParams(temperature=0)
    t0 = time.perf_counter()
    handles = [model.engine.submit(Request(p, greedy, n_gen, ignore_eos=True)) for p in prompts]
    times: list[list[float]] = [[] for _ in handles]

    async def read(i, handle):
        async for _ in handle:
            times[i].append(time.perf_counter())

    await asyncio.gather(*(read(i, h) for i, h in enumerate(handles)))
    end = max(t[-1] for t in times)
    assert sum(len(h.tokens) for h in handles) == len(prompts) * n_gen
    ttft = [t[0] - t0 for t in times]
    itl = [b - a for t in times for a, b in zip(t, t[1:], strict=False)]
    # Decode throughput: tokens generated once every request has its first token, per second.
    all_started = max(t[0] for t in times)
    decoded = sum(1 for t in times for x in t if x > all_started)
    return dict(
        tok_s=len(prompts) * n_gen / (end - t0),
        decode_tok_s=decoded / (end - all_started),
        ttft_med=statistics.median(ttft),
        ttft_p95=_percentile(ttft, 0.95),
        itl_med=statistics.median(itl),
        itl_p95=_percentile(itl, 0.95),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", default="1,2,4,8,16", help="concurrent requests, comma list")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--generate", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2, help="runs per N; the best decode figure is kept")
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
            in_child(run_engine, path, a.device, a.threads, int(n), a.prompt, a.generate, a.reps)
            for n in a.n.split(",")
        ]
        print(
            f"\n{os.path.basename(path)}"
            + (f"  (llama.cpp, one sequence: decode {peer['decode']:.1f} tok/s)" if peer else "")
        )
        head = (
            f"{'N':>3}{'e2e tok/s':>11}{'decode tok/s':>14}{'x N=1':>7}{'x llama.cpp':>13}{'TTFT med s':>12}"
            f"{'TTFT p95 s':>12}{'ITL med ms':>12}{'ITL p95 ms':>12}{'peak RSS MB':>13}{'KV MB':>8}"
            f"{'KV / needed':>13}"
        )
        print(head)
        for r in rows:
            vs_peer = f"{r['decode_tok_s'] / peer['decode']:>13.2f}" if peer else f"{'-':>13}"
            print(
                f"{r['n']:>3}{r['tok_s']:>11.1f}{r['decode_tok_s']:>14.1f}"
                f"{r['decode_tok_s'] / rows[0]['decode_tok_s']:>7.2f}{vs_peer}"
                f"{r['ttft_med']:>12.2f}{r['ttft_p95']:>12.2f}{1000 * r['itl_med']:>12.1f}"
                f"{1000 * r['itl_p95']:>12.1f}{r['rss_mb']:>13.0f}{r['kv_mb']:>8.1f}{r['kv_ratio']:>13.2f}"
            )
        print(_ceiling(a.prompt, rows[0], peer))
    return 0


def _ceiling(n_prompt: int, solo: dict, peer: dict | None) -> str:
    """The prompt's prefill rate against one sequence's decode, for realm and llama.cpp.

    A batched decode step reads every weight once for its N tokens, a prompt's pass once for
    all of its tokens, so N sequences' decode throughput stays under the prefill rate: how far
    batching can go on this machine. realm's rate is from N = 1's time to first token (the
    prompt's pass and one sampled token).
    """
    realm_prefill = n_prompt / solo["ttft_med"]
    line = (f"prefill of one {n_prompt}-token prompt: realm {realm_prefill:.1f} tok/s "
            f"({realm_prefill / solo['decode_tok_s']:.2f} x its N = 1 decode)")
    if peer:
        ratio = peer["prefill"] / peer["decode"]
        line += f", llama.cpp {peer['prefill']:.1f} tok/s ({ratio:.2f} x its decode)"
    return line


if __name__ == "__main__":
    sys.exit(main())
