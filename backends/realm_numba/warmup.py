"""Compile every kernel a model run needs, on tiny inputs, through the backend's own ops.

Going through the public ops (rather than calling kernels directly) compiles exactly the
type signatures real calls use: read-only uint8 blocks, C-contiguous float32 activations.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from realm.backend import RopeMode
from realm.gguf.types import GGMLType, type_traits

# Enough columns for one block of every format (NVFP4: 64, k-quants: 256).
_K = 256


def _zero_weight(be: Any, qtype: GGMLType, rows: int = 4) -> Any:
    traits = type_traits(qtype)
    raw = np.zeros(rows * _K // traits.block_size * traits.type_size, np.uint8)
    return be.upload_quant(raw, qtype, (rows, _K), name=f"warmup_{qtype.name}")


def _timed(seconds: dict[str, float], group: str, fn) -> None:
    t0 = time.perf_counter()
    fn()
    seconds[group] = seconds.get(group, 0.0) + time.perf_counter() - t0


def warm_all(be: Any) -> dict[str, float]:
    """Run each op once per kernel variant; returns seconds spent per kernel group."""
    seconds: dict[str, float] = {}
    x1, x4 = be.upload(np.zeros((1, _K))), be.upload(np.zeros((4, _K)))
    out1, out4 = be.empty((1, 4)), be.empty((4, 4))
    for qtype in be._k.FAST_MATVEC:
        w = _zero_weight(be, qtype)
        _timed(seconds, f"matmul decode {qtype.name}", lambda w=w: be.matmul(x1, w, out1))
    generic = _zero_weight(be, GGMLType.Q2_K)  # any type without a fused kernel
    _timed(seconds, "matmul decode (other types)", lambda: be.matmul(x1, generic, out1))
    for qtype in (GGMLType.F32, GGMLType.Q8_0):  # float tile path, decoded tile path
        w = _zero_weight(be, qtype)
        _timed(seconds, "matmul prefill", lambda w=w: be.matmul(x4, w, out4))
    w_float = be.upload(np.zeros((4, _K)))
    _timed(seconds, "matmul float32 array",
           lambda: (be.matmul(x1, w_float, out1), be.matmul(x4, w_float, out4)))
    ids = be.upload(np.array([1, 0], np.int32))
    rows_out = be.empty((2, _K))
    _timed(seconds, "get_rows", lambda: (be.get_rows(generic, ids, rows_out),
                                         be.get_rows(w_float, ids, rows_out)))
    _timed(seconds, "dequantize", lambda: be.dequantize(generic, be.empty((4, _K))))

    h = be.upload(np.ones((3, 2, 64)))
    _timed(seconds, "rms_norm", lambda: be.rms_norm(h, be.upload(np.ones(64)), 1e-6, h))
    pos = be.upload(np.arange(3, dtype=np.int32))
    _timed(seconds, "rope", lambda: be.rope(h, pos, 64, 10000.0, RopeMode.NEOX, h))
    cache = be.upload(np.ones((8, 1, 64)))
    _timed(seconds, "attention", lambda: be.attention(h, cache, cache, 5, 0.125, be.empty(h.shape)))
    big_q = be.upload(np.ones((32, 4, 64)))
    big_cache = be.upload(np.ones((64, 1, 64)))
    _timed(seconds, "attention", lambda: be.attention(big_q, big_cache, big_cache, 32, 0.125,
                                                      be.empty(big_q.shape), window=16, softcap=30.0))
    _timed(seconds, "swiglu, geglu", lambda: (be.swiglu(x4, x4, be.empty(x4.shape)),
                                              be.geglu(x4, x4, be.empty(x4.shape))))
    _timed(seconds, "add, scale, copy_rows", lambda: (
        be.add(x4, x4, be.empty(x4.shape)), be.add(x4, x1, be.empty(x4.shape)),
        be.scale(x4, 2.0, be.empty(x4.shape)), be.copy_rows(h[:1, :1], cache, 2)))
    return seconds
