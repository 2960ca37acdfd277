"""Activations rounded to 16-bit integer blocks: the input side of the ``matmul_q16`` op.

Each run of 32 values along the last axis becomes 32 int16 ``q`` and one float32 scale
``d``, so a quantized weight can be multiplied in integers (the ``cpu`` backend's
``vpmaddwd`` kernels):

    d = max|x| / 32767,   q = rint(x / d)   (ties to even; q = 0 where d = 0)

every step in float32. A block holding a NaN gets a NaN scale, so the NaN reaches every
output it feeds, as it would through a float matmul.

Why 16 bits and not llama.cpp's 8 (its Q8_0 / Q8_1 / Q8_K activations): 8-bit blocks put
0.3-2% of error into each matmul of SmolLM2-135M, and that noise, re-rounded at every
layer, moved the last-position logits of one golden prompt to cosine 0.9972 with
llama.cpp's (llama.cpp's own 8-bit rounding lands elsewhere), under the 0.998 that a float
implementation keeps. 16-bit blocks are within ~1e-5 of float32 and cost the integer
kernel one more widening per block (docs/numba.md).

>>> import numpy as np
>>> q, d = quantize_q16(np.linspace(-1, 1, 32, dtype=np.float32)[None])
>>> int(q[0, 0]), int(q[0, -1]), bool(d[0, 0] == np.float32(1) / np.float32(32767))
(-32767, 32767, True)
"""

from __future__ import annotations

import numpy as np

Q16_BLOCK = 32  # values per scale
Q16_MAX = 32767  # the largest |q|


def quantize_q16(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q int16 [..., k], d float32 [..., k // 32])`` for float32 ``x [..., k]``, ``k % 32 == 0``."""
    x = np.asarray(x, dtype=np.float32)
    blocks = x.reshape(*x.shape[:-1], x.shape[-1] // Q16_BLOCK, Q16_BLOCK)
    with np.errstate(invalid="ignore"):
        d = np.abs(blocks).max(axis=-1) / np.float32(Q16_MAX)
        d = np.where(np.isnan(blocks).any(axis=-1), np.float32(np.nan), d).astype(np.float32)
    usable = (d != 0) & np.isfinite(d)
    divisor = np.where(usable, d, np.float32(1)).astype(np.float32)
    q = np.where(usable[..., None], np.rint(np.where(usable[..., None], blocks, 0) / divisor[..., None]), 0)
    # A subnormal d carries few bits, so |x| / d can round past 32767 there: keep the largest.
    q = np.clip(q, -Q16_MAX, Q16_MAX)
    return q.astype(np.int16).reshape(x.shape), d


def dequantize_q16(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The float32 values ``q * d`` that `quantize_q16`'s blocks stand for."""
    blocks = q.reshape(*q.shape[:-1], q.shape[-1] // Q16_BLOCK, Q16_BLOCK).astype(np.float32)
    return (blocks * d[..., None]).reshape(q.shape)
