"""Serving throughput: `realm serve` against llama.cpp's server, with 1, 8 and 32 clients.

Each server runs in its own process on a loopback port with the same model file, threads and
context. Every client streams completions one after another (distinct prompts, greedy,
``--max-tokens`` each) through the official OpenAI client; all clients start together. Prints,
per server and client count, aggregate generated tokens/s over the whole run and time to first
token (median and p95). llama.cpp's server (llama-cpp-python's ``python -m llama_cpp.server``)
runs one sequence at a time, so its clients queue (it is started with ``--interrupt_requests
False``: by default a new request cuts the stream in flight short); realm's engine decodes
them together. "tokens" counts the streamed pieces with text, about one per generated token.

    python benchmarks/bench_server.py                                  # SmolLM2, 2 threads
    python benchmarks/bench_server.py --clients 1,8 --llama-python /path/to/venv/bin/python

``--llama-python`` is a Python with ``llama-cpp-python[server]`` installed (default: this one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import date

import httpx
import openai
from timing import cpu_name

TOPICS = [
    "a lighthouse",
    "a lost key",
    "the first snow",
    "a robot chef",
    "an old map",
    "a quiet library",
    "a river town",
    "a night train",
    "a tiny dragon",
    "a broken clock",
    "a desert garden",
    "a kite",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], base: str, timeout: float = 300) -> subprocess.Popen:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited with {proc.returncode}")
        try:  # ready when the model is listed (realm answers while it loads, with an empty list)
            listed = httpx.get(base + "/v1/models", timeout=2)
            if listed.status_code == 200 and any(m["id"] == "m" for m in listed.json()["data"]):
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{command[:4]} did not start")


async def _run_clients(base: str, model: str, n_clients: int, per_client: int, max_tokens: int) -> dict:
    ttfts: list[float] = []
    tokens = 0

    async def client_loop(client, c):
        nonlocal tokens
        for r in range(per_client):
            topic = TOPICS[(c * per_client + r) % len(TOPICS)]
            prompt = f"Request {c}.{r}. Here is a long, detailed story about {topic}:"
            t0 = time.perf_counter()
            stream = await client.completions.create(
                model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True
            )
            first = True
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    if first:
                        ttfts.append(time.perf_counter() - t0)
                        first = False
                    tokens += 1

    async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=600) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client, c) for c in range(n_clients)))
        wall = time.perf_counter() - t0
    ttfts.sort()
    return {
        "tok_s": tokens / wall,
        "ttft_med": statistics.median(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))],
        "tokens": tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--llama-python", default=sys.executable)
    a = ap.parse_args()
    if a.model is None:
        from realm.models_on_pypi import smollm2_path

        a.model = str(smollm2_path())
    clients = [int(c) for c in a.clients.split(",")]
    servers = {
        "realm": [
            sys.executable,
            "-m",
            "realm",
            "serve",
            a.model,
            "--alias",
            "m",
            "--device",
            "cpu",
            "--threads",
            str(a.threads),
            "--n-ctx",
            str(a.n_ctx),
            "--max-running",
            str(max(clients)),
        ],
        "llama.cpp": [
            a.llama_python,
            "-m",
            "llama_cpp.server",
            "--model",
            a.model,
            "--model_alias",
            "m",
            "--n_threads",
            str(a.threads),
            "--n_ctx",
            str(a.n_ctx),
            # by default a new request cuts the stream in flight short; queue requests instead
            "--interrupt_requests",
            "False",
        ],
    }
    print(
        f"{date.today()}, {cpu_name()}, {os.cpu_count()} CPUs, {a.threads} threads, "
        f"{os.path.basename(a.model)}, "
        f"{a.requests_per_client} streamed completions per client, {a.max_tokens} tokens each, greedy\n"
    )
    print(f"{'server':<10} {'clients':>7} {'tokens':>7} {'tok/s':>8} {'TTFT med s':>11} {'TTFT p95 s':>11}")
    for name, command in servers.items():
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = _start([*command, "--port", str(port), "--host", "127.0.0.1"], base)
        try:
            asyncio.run(_run_clients(base, "m", 1, 1, 8))  # warm up
            for n in clients:
                r = asyncio.run(_run_clients(base, "m", n, a.requests_per_client, a.max_tokens))
                print(
                    f"{name:<10} {n:>7} {r['tokens']:>7} {r['tok_s']:>8.1f} {r['ttft_med']:>11.2f} "
                    f"{r['ttft_p95']:>11.2f}",
                    flush=True,
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
