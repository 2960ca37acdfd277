"""Where a decode step's time goes on the `cpu` backend: op classes, and the host's share.

    python benchmarks/bench_step.py [--model smollm2|gemma3|PATH] [--threads 2] [--position 160]

The model reads ``--position`` prompt tokens, then decodes. The decode step's program (the
layers, final norm and output projection as one compiled call, `compile_step`) is run as
recorded and again with only some of its calls kept: the matmuls, the output projection
alone, everything but the matmuls, the attention alone (a matmul whose input norm is folded
in, ``rms_norm_matmuls_q16``, counts as a matmul). Each is timed over 100 runs (best
of 3). Then 64 decode steps as bench_models.py runs them (`Transformer.eval` of one token
and its argmax): the host time is their wall time minus the time inside the compiled call,
plus that call's own cost from Python (an empty program's, timed after reading 100 MB).
Then the same through the engine (a greedy request, as `model.generate` runs it; each
step timed on the engine's worker thread), in turns
with the greedy token picked in the step (`argmax_rows`, only it copied to the host) and
on the host from the copied logits. Last, both ways with the compiled call replaced by
nothing (the host's work with its code and data in the caches) and by a 100 MB read (the
caches emptied, as the step's weights empty them): what the host time is made of.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import model_path  # noqa: E402
from timing import best_of, cpu_name  # noqa: E402

MATMULS = frozenset({"matmul", "matmul_q16", "matmuls_q16", "rms_norm_matmuls_q16"})
GROUPS = {
    "the whole program": lambda c, last: True,
    "matmuls (layers and output)": lambda c, last: c.op in MATMULS,
    "output projection": lambda c, last: c is last,
    "everything but the matmuls": lambda c, last: c.op not in MATMULS,
    "attention": lambda c, last: c.op == "attention_paged",
}


STEPS = 64


def decode_steps(t, prompt: list[int], inside: list[float]) -> tuple[float, float]:
    """Seconds per decode step (wall, and wall minus ``inside``: the time in compiled calls)."""
    t.reset()
    token = int(t.eval(prompt)[-1].argmax())
    inside[0] = 0.0
    t0 = time.perf_counter()
    for _ in range(STEPS):
        token = int(t.eval([token])[-1].argmax())
    wall = (time.perf_counter() - t0) / STEPS
    return wall, wall - inside[0] / STEPS


def engine_steps(model, prompt: list[int], inside: list[float]) -> tuple[float, float]:
    """`decode_steps` through the engine: one greedy request of ``STEPS + 1`` tokens. Each of
    the engine's steps is timed on its worker thread (`Engine.step`: scheduling, the batch,
    the pass, the sampling and the hand-over to the reader); the decode steps' times, less
    the time inside their compiled calls."""
    from realm.engine.request import Request
    from realm.generate import SamplingParams

    engine = model.engine
    run_step = engine.step
    steps: list[tuple[float, float]] = []  # (wall, inside) of each step

    def timed_step():
        t0, before = time.perf_counter(), inside[0]
        try:
            return run_step()
        finally:
            steps.append((time.perf_counter() - t0, inside[0] - before))

    engine.step = timed_step
    try:
        engine.submit(Request(prompt, SamplingParams(temperature=0), STEPS + 1, ignore_eos=True)).result()
    finally:
        del engine.step
    decode = steps[1 : STEPS + 1]  # after the prompt's step
    wall = sum(w for w, _ in decode) / len(decode)
    return wall, wall - sum(i for _, i in decode) / len(decode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--position", type=int, default=160, help="prompt tokens before the step (default 160)")
    a = ap.parse_args()

    import realm
    import realm_numba.step as step

    path = model_path(a.model)
    model = realm.load(path, device="cpu", n_threads=a.threads, n_ctx=a.position + 200)
    model.backend.warmup()
    recorded = {}
    compile_step = model.backend.compile_step

    def capture(calls, inputs):
        recorded["calls"], recorded["inputs"] = calls, inputs
        return compile_step(calls, inputs)

    model.backend.compile_step = capture
    t = model.transformer
    prompt = list(range(100, 100 + a.position))
    t.reset()
    t.eval(prompt)
    t.eval([5])  # the decode step's program is recorded here
    calls, inputs = recorded["calls"], recorded["inputs"]
    last = [c for c in calls if c.op in MATMULS][-1]
    print(f"{cpu_name()}, {a.threads} threads, {Path(path).name}, a decode step at position {a.position}:")
    print(f"{len(calls)} calls in its program\n\n{'part':<30}{'ms per step':>12}")
    for name, keep in GROUPS.items():
        program = compile_step([c for c in calls if keep(c, last)], inputs)
        seconds = best_of(3, lambda p=program: [p.run(inputs) for _ in range(100)], warm=True) / 100
        print(f"{name:<30}{seconds * 1e3:>12.3f}")

    inside = [0.0]  # seconds in the compiled loop, of every program made or run from here on
    made = step.NumbaStepProgram.__init__

    def make(self, *args, **kwargs):
        made(self, *args, **kwargs)
        timed_kernel(self)

    def timed_kernel(program):
        kernel = program._kernel

        @functools.wraps(kernel)
        def timed(*args):
            t0 = time.perf_counter()
            try:
                return kernel(*args)
            finally:
                inside[0] += time.perf_counter() - t0

        program._kernel = timed

    for program in t._programs.values():
        timed_kernel(program)
    step.NumbaStepProgram.__init__ = make
    for _ in range(3):
        wall, host = decode_steps(t, prompt, inside)
        print(f"{STEPS} decode steps: {wall * 1e3:.2f} ms each, {host * 1e3:.3f} ms of it on the host "
              f"around the compiled call")
    engine_steps(model, prompt, inside)  # records the engine's programs
    picks_in_pass = t._picks_in_pass
    for _ in range(3):
        for picks in (picks_in_pass, False):
            t._picks_in_pass = picks
            wall, host = engine_steps(model, prompt, inside)
            where = "picked in the step" if picks else "picked on the host"
            print(f"{STEPS} steps through the engine, the token {where}: {wall * 1e3:.2f} ms each, "
                  f"{host * 1e3:.3f} ms of it on the host around the compiled call")
    t._picks_in_pass = picks_in_pass
    program = next(reversed(t._programs.values()))
    call = cold_call_seconds(program)
    print(f"the compiled call itself (an empty program, after reading 100 MB): {call * 1e3:.3f} ms; "
          f"host per step: the two added")

    big = np.ones(100_000_000 // 8)
    for name, stand_in in (("nothing", lambda *args: -1), ("a 100 MB read", lambda *args: big.sum() * 0 - 1)):
        for program in t._programs.values():  # the logits and their counts stay as the last step left them
            program._kernel = stand_in
            timed_kernel(program)  # its time is not the host's
        for way, steps in (("eval", lambda: decode_steps(t, prompt, inside)),
                           ("the engine", lambda: engine_steps(model, prompt, inside))):
            hosts = [steps()[1] for _ in range(3)]
            print(f"the compiled call replaced by {name}, through {way}: "
                  f"{' / '.join(f'{h * 1e3:.3f}' for h in hosts)} ms on the host per step")


def cold_call_seconds(program, reps: int = 30) -> float:
    """Median time of ``program``'s compiled call with no instructions, each right after
    reading 100 MB (as a step's weights leave the caches): the part of the "inside" time
    that is the call from Python, not the step's work."""
    big = np.ones(100_000_000 // 8)
    empty = program._code[:0].copy()
    kernel = getattr(program._kernel, "__wrapped__", program._kernel)
    arguments = (empty, *program._arguments(program._backend._threads())[1:])
    times = []
    for _ in range(reps):
        big.sum()
        t0 = time.perf_counter()
        kernel(*arguments)
        times.append(time.perf_counter() - t0)
    return sorted(times)[reps // 2]


if __name__ == "__main__":
    main()
