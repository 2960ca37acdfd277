"""Compile every kernel a model run needs, on tiny inputs, through the backend's own ops.

Going through the public ops (rather than calling kernels directly) compiles exactly the
type signatures real calls use: read-only uint8 blocks, C-contiguous float32 activations.
Given the model's GGML types, only their kernels are compiled: a cold compile of every
kernel takes 45-75 s on a 2-vCPU EPYC, most of it the decoders of every format, which
the one quantized matmul kernel (any type, any number of tokens) and the embedding
lookup hold.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from realm.backend import RopeMode
from realm.gguf.types import GGMLType, type_traits
from realm.step_program import OpCall
from realm_numba.compile_notice import NOTICE

# Enough columns for one block of every format (NVFP4: 64, k-quants: 256).
_K = 256


def _zero_weight(be: Any, qtype: GGMLType, rows: int = 4) -> Any:
    traits = type_traits(qtype)
    raw = np.zeros(rows * _K // traits.block_size * traits.type_size, np.uint8)
    return be.upload_quant(raw, qtype, (rows, _K), name=f"warmup_{qtype.name}")


def warm_steps(be: Any, qtypes: Iterable[GGMLType] | None = None) -> list[tuple[str, Callable[[], Any]]]:
    """(kernel group, a call that compiles it) for every kernel a model of `qtypes` uses;
    every kernel when `qtypes` is None."""
    fast = frozenset({GGMLType.F32, *be._k.LANES})  # types with a decoder of their own
    wanted = None if qtypes is None else {GGMLType(q) for q in qtypes}
    everything = wanted is None
    x1, x4 = be.upload(np.zeros((1, _K))), be.upload(np.zeros((4, _K)))
    out1, out4 = be.empty((1, 4)), be.empty((4, 4))
    # Any type without a decoder of its own runs the exact (generic) decoder.
    generic = _zero_weight(be, GGMLType.Q2_K)
    steps: list[tuple[str, Callable[[], Any]]] = []

    def step(group: str, fn: Callable[[], Any]) -> None:
        steps.append((group, fn))

    # The model multiplies the types with an integer kernel by matmul_q16 (one kernel for all
    # of them, holding both ways of unpacking: a decode's rows and a prompt's), the others by
    # matmul: one kernel for every type and number of tokens (gemm.py), whose first step
    # compiles it, the others running their type's decoder once. F32 weights have their own.
    integer = frozenset(map(GGMLType, be._k.INT8_FORMATS))
    as_integers = sorted(integer if everything else integer & wanted)
    if as_integers:
        w_int = _zero_weight(be, as_integers[0])
        step("matmul_q16", lambda: (be.matmul_q16(x1, w_int, out1), be.matmul_q16(x4, w_int, out4)))
    as_floats = None if everything else wanted - integer
    for qtype in sorted(fast):
        if everything or qtype in as_floats:
            w = _zero_weight(be, qtype)
            step(f"matmul decode {qtype.name}", lambda w=w: be.matmul(x1, w, out1))
    if everything or any(q not in fast for q in as_floats):
        step("matmul decode (other types)", lambda: be.matmul(x1, generic, out1))
    float_blocks = everything or any(q != GGMLType.F32 for q in as_floats)
    w8 = _zero_weight(be, GGMLType.Q8_0)
    if float_blocks:  # a prompt's rows: the same kernel
        step("matmul prefill (quantized)", lambda: be.matmul(x4, w8, out4))
    ids = be.upload(np.array([1, 0], np.int32))
    rows_out = be.empty((2, _K))
    step("get_rows", lambda: be.get_rows(generic, ids, rows_out))
    if everything:  # plain float32 weights and full dequantization: tests and research code
        w_float = be.upload(np.zeros((4, _K)))
        step("matmul float32 array", lambda: be.matmul(x4, w_float, out4))
        step("get_rows float32 array", lambda: be.get_rows(w_float, ids, rows_out))
        step("dequantize", lambda: be.dequantize(generic, be.empty((4, _K))))

    h = be.upload(np.ones((3, 2, 64)))
    step("rms_norm", lambda: be.rms_norm(h, be.upload(np.ones(64)), 1e-6, h))
    pos = be.upload(np.arange(3, dtype=np.int32))
    step("rope", lambda: be.rope(h, pos, 64, 10000.0, RopeMode.NEOX, h))
    # The model's attention: the paged KV cache. A pool of 4 blocks of 4 slots, two sequences;
    # one token's call, a batch's and dense attention go through the same kernel (see
    # attention.attention_paged).
    pool = be.upload(np.ones((16, 1, 64)))
    table = be.upload(np.array([[2, 0], [1, 3]], np.int32))
    seq_ids = be.upload(np.array([0, 1, 1], np.int32))
    step(
        "attention_paged",
        lambda: be.attention_paged(
            h, pool, pool, table, 4, seq_ids, pos, 0.125, be.empty(h.shape), window=2, softcap=30.0
        ),
    )
    step("set_rows", lambda: be.set_rows(h[:2, :1], pool, be.upload(np.array([5, 9], np.int32))))
    cache = be.upload(np.ones((8, 1, 64)))
    step(
        "swiglu, geglu", lambda: (be.swiglu(x4, x4, be.empty(x4.shape)), be.geglu(x4, x4, be.empty(x4.shape)))
    )
    step(
        "add, scale, copy_rows, count_nonfinite, argmax_rows",
        lambda: (
            be.add(x4, x4, be.empty(x4.shape)),
            be.add(x4, x1, be.empty(x4.shape)),
            be.scale(x4, 2.0, be.empty(x4.shape)),
            be.copy_rows(h[:1, :1], cache, 2),
            be.count_nonfinite(x4, be.empty((len(x4),), np.int32)),
            be.argmax_rows(x4, be.empty((len(x4),), np.int32)),
        ),
    )
    # A short pass runs as one compiled loop over its ops (step.py), compiled as a whole
    # whatever ops a program holds; its variant with float matmuls of quantized weights only
    # where the model has them (it holds every float decoder).
    # With an attention call, so that a run's compiled index check is compiled too, and run
    # again with a wider block table (a sequence that grew a block), which numba's typed
    # list compiles a setter for in each process.
    attend = OpCall("attention_paged", (h, pool, pool, table, 4, seq_ids, pos, 0.125, be.empty(h.shape)))
    calls = [OpCall("scale", (x4, 2.0, x4)), attend]
    calls += [OpCall("matmul", (x4, w8, out4))] if float_blocks else []
    wider = be.upload(np.array([[2, 0, 0], [1, 3, 0]], np.int32))

    def compile_step() -> None:
        program = be.compile_step(calls, [pos, seq_ids, table])
        program.run([pos, seq_ids, table])
        program.run([pos, seq_ids, wider])

    step("compile_step", compile_step)
    return steps


def warm_all(
    be: Any, qtypes: Iterable[GGMLType] | None = None, progress: bool | None = None
) -> dict[str, float]:
    """Run each step of `warm_steps` once; returns seconds spent per kernel group.

    ``progress``: None shows a bar on a terminal once a kernel actually compiles (the
    on-disk cache was cold); True shows it whenever something compiles; False shows
    nothing, not even the one-line compile message.
    """
    steps = warm_steps(be, qtypes)
    seconds: dict[str, float] = {}
    bar = None
    compiled_before = NOTICE.compiled
    show_bar = progress if progress is not None else bool(sys.stderr and sys.stderr.isatty())
    if progress is False:
        NOTICE.quiet += 1
    try:
        for done, (group, fn) in enumerate(steps, 1):
            t0 = time.perf_counter()
            fn()
            seconds[group] = seconds.get(group, 0.0) + time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
            elif show_bar and NOTICE.compiled > compiled_before:
                from tqdm import tqdm

                bar = tqdm(
                    total=len(steps), initial=done, desc="realm: CPU kernels", unit="kernel", file=sys.stderr
                )
    finally:
        if progress is False:
            NOTICE.quiet -= 1
        if bar is not None:
            bar.close()
    return seconds
