"""Which integer multiply-add instructions LLVM emits for realm's loops, per x86 processor.

    python benchmarks/isa_report.py [--cpus znver3,skylake-avx512,icelake-server,...]

Nothing runs on the processors named: each is only a compile target (LLVM's names, as
``llc -mcpu`` takes them), so one machine reports for all of them. Two tables:

1. **Loop shapes as plain numba loops**: what numba's own vectorizer makes of the
   integer dot-product loops one would write first; the counts are of the compiled
   function's instructions.
2. **realm's decode loop per weight format**: dot_ir's run of rows (what `matmul_q16`
   runs for a decode token), inlined into a numba function and optimized by numba's own
   pipeline, as the backend builds it: the instructions per 32 values of the innermost
   loop with the most multiply-adds, and those multiply-adds (also per 32 values; a pass
   covers 16 values per ``vpmaddwd`` or ``vpdpwssd``, so an unrolled loop counts right).

``vpmaddwd``: int16 pairs into int32 (AVX2); ``vpdpwssd``: the same plus the add, one
instruction (AVX-512 VNNI, AVX-VNNI); ``vpmaddubsw``: uint8 x int8 pairs saturated to
int16 (AVX2); ``vpdpbusd``: four uint8 x int8 products into int32 (VNNI); ``vpmulld``: a
32-bit multiply, what a loop that did not find a multiply-add falls back to.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CPUS = "znver3,skylake-avx512,icelake-server,sapphirerapids,znver4"
MADDS = ("vpmaddwd", "vpdpwssd", "vpmaddubsw", "vpdpbusd", "vpmulld")


def mnemonics(asm: str) -> list[str]:
    """The instruction mnemonics of an assembly listing (``{vex}`` prefixes dropped)."""
    out = []
    for line in asm.splitlines():
        words = line.split()
        if words and words[0] == "{vex}":
            words = words[1:]
        if words and not words[0].startswith((".", "#")) and not words[0].endswith(":"):
            out.append(words[0])
    return out


def madd_counts(names: list[str], per: int = 1) -> str:
    """The multiply-adds among ``names``, each count divided by ``per``."""
    counts = collections.Counter(n for n in names if n.startswith(MADDS))
    found = [f"{counts[n] / per:g} {n}" for n in sorted(counts)]
    return ", ".join(found) if found else "none (scalar)"


# ---------------------------------------------------------------- 1. plain numba loops


def shape_functions():
    """name -> (numba function, signature) for each loop shape."""
    import numpy as np
    from numba import njit

    @njit
    def blocks_constant_trip(w, x, s, nb):
        acc = np.float32(0)
        for b in range(nb):
            p = np.int32(0)
            for j in range(32):  # a constant trip count: LLVM unrolls it fully, scalar
                p += np.int32(w[b * 32 + j]) * np.int32(x[b * 32 + j])
            acc += s[b] * np.float32(p)
        return acc

    @njit
    def blocks_runtime_trip(w, x, s, nb, block):
        acc = np.float32(0)
        for b in range(nb):
            p = np.int32(0)
            for j in range(block):
                p += np.int32(w[b * block + j]) * np.int32(x[b * block + j])
            acc += s[b] * np.float32(p)
        return acc

    @njit
    def dot_into_int32(w, x, n):
        p = np.int32(0)
        for j in range(n):
            p += np.int32(w[j]) * np.int32(x[j])
        return p

    @njit
    def pairs_saturated_int16(w, x, out, n):  # vpmaddubsw's arithmetic
        for j in range(n):
            t = np.int32(w[2 * j]) * np.int32(x[2 * j]) + np.int32(w[2 * j + 1]) * np.int32(x[2 * j + 1])
            out[j] = np.int16(min(max(t, -32768), 32767))

    @njit
    def quads_into_int32(w, x, out, n):  # vpdpbusd's arithmetic
        for j in range(n):
            t = out[j]
            for i in range(4):
                t += np.int32(w[4 * j + i]) * np.int32(x[4 * j + i])
            out[j] = t

    return {
        "int16 x int16, per 32-value block, trip count the constant 32": (
            blocks_constant_trip, "float32(int16[::1], int16[::1], float32[::1], int64)"),
        "int16 x int16, per block (at b * block + j), trip count a run-time argument": (
            blocks_runtime_trip, "float32(int16[::1], int16[::1], float32[::1], int64, int64)"),
        "uint8 x int8 summed into int32": (dot_into_int32, "int32(uint8[::1], int8[::1], int64)"),
        "int8 x int8 summed into int32": (dot_into_int32, "int32(int8[::1], int8[::1], int64)"),
        "int16 x int16 summed into int32": (dot_into_int32, "int32(int16[::1], int16[::1], int64)"),
        "uint8 x int8 pairs, saturated to int16": (
            pairs_saturated_int16, "void(uint8[::1], int8[::1], int16[::1], int64)"),
        "uint8 x int8, four per int32 lane": (
            quads_into_int32, "void(uint8[::1], int8[::1], int32[::1], int64)"),
    }  # fmt: skip


def shapes_here() -> dict[str, str]:
    """Each shape's multiply-adds, compiled for this process's NUMBA_CPU_NAME."""
    report = {}
    for name, (fn, signature) in shape_functions().items():
        fn.compile(signature)
        asm = fn.inspect_asm(fn.signatures[-1])
        report[name] = madd_counts(mnemonics(asm))
    return report


# ---------------------------------------------------------------- 2. realm's decode loop


def innermost_loops(asm: str) -> list[list[str]]:
    """Each innermost loop's instructions: from a label to the branch back to it, with no
    other label between (a loop with branches inside it is not listed)."""
    lines = [line.split("#", 1)[0].strip() for line in asm.splitlines()]
    loops = []
    for i, line in enumerate(lines):
        jump = re.match(r"^j\w+\s+(\.LBB\w+)$", line)
        if jump and jump.group(1) + ":" in lines[:i]:
            start = lines.index(jump.group(1) + ":")
            body = lines[start + 1 : i + 1]
            if not any(b.endswith(":") and b.startswith(".LBB") for b in body):
                loops.append(mnemonics("\n".join(body)))
    return loops


def decode_loop_here(fmt) -> str:
    """``fmt``'s decode loop as `matmul_q16` builds it (dot_ir's run of rows, inlined into a
    numba function and optimized by numba's pipeline), for this process's NUMBA_CPU_NAME:
    instructions per 32 values in the innermost loop with the most multiply-adds, and those.
    A pass of the loop covers 16 values per ``vpmaddwd`` or ``vpdpwssd``."""
    from numba import njit
    from numba.extending import intrinsic

    from realm_numba import dot_ir

    def build(module):
        return dot_ir._rows_function(module, fmt, "avx2")

    @intrinsic
    def rows_of(typingctx, w, w_at, row_bytes, rows, xq, xq_at, xd, xd_at, xs, xs_at, nb, out, out_at,
                tokens, out_stride):  # fmt: skip
        return dot_ir.void_call(build, w, w_at, row_bytes, rows, xq, xq_at, xd, xd_at, xs, xs_at, nb, out,
                                out_at, tokens, out_stride)  # fmt: skip

    @njit(fastmath=False)  # as gemm_q16.EXACT
    def decode(w, row_bytes, rows, xq, xd, xs, nb, out, tokens, out_stride):
        rows_of(w, 0, row_bytes, rows, xq, 0, xd, 0, xs, 0, nb, out, 0, tokens, out_stride)

    decode.compile("void(uint8[:, ::1], int64, int64, int16[:, ::1], float32[:, ::1], float32[:, ::1], "
                   "int64, float32[::1], int64, int64)")  # fmt: skip
    loops = [body for body in innermost_loops(decode.inspect_asm(decode.signatures[0])) if _multiplies(body)]
    if not loops:
        return "no loop with a multiply-add"
    body = max(loops, key=_multiplies)
    blocks = _multiplies(body) / 2  # 32-value blocks a pass: two multiply-adds each
    return f"{len(body) / blocks:.1f}: {madd_counts(body, blocks)}"


def _multiplies(body: list[str]) -> int:
    return sum(1 for n in body if n.startswith(("vpmaddwd", "vpdpwssd")))


def report_here() -> dict:
    """Both tables' cells for this process's NUMBA_CPU_NAME."""
    sys.path[:0] = [str(ROOT), str(ROOT / "backends")]
    from realm_numba.int8_formats import FORMATS

    return {"shapes": shapes_here(), "decode": {f.ggml.name: decode_loop_here(f) for f in FORMATS.values()}}


def report_for(cpu: str) -> dict:
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": ""}
    done = subprocess.run([sys.executable, __file__, "--here"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        why = done.stderr[-2000:]
        raise SystemExit(f"compiling for {cpu!r} failed (is it an LLVM processor name?):\n{why}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", default=DEFAULT_CPUS, help=f"LLVM processor names (default {DEFAULT_CPUS})")
    ap.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.here:
        print(json.dumps(report_here()))
        return
    cpus = a.cpus.split(",")
    import llvmlite
    import numba

    print(f"numba {numba.__version__}, llvmlite {llvmlite.__version__}; compile targets only\n")
    by_cpu = {cpu: report_for(cpu) for cpu in cpus}
    for part, title, first in (
        ("shapes", "1. Loop shapes as plain numba loops: multiply-add instructions in the compiled function",
         "loop shape"),
        ("decode", "2. realm's decode loop, per 32 values: instructions in the loop: multiply-adds",
         "format"),
    ):  # fmt: skip
        names = list(by_cpu[cpus[0]][part])
        print(f"{title}\n")
        print(table([first, *cpus], [(n, [by_cpu[c][part][n] for c in cpus]) for n in names]) + "\n")


if __name__ == "__main__":
    main()
