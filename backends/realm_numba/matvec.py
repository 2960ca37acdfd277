"""Vectorized row decoders for the matmul: one weight row's raw blocks to float32.

``<type>_row(src, dst, lanes)`` writes the ``dst.shape[0]`` values of the row whose bytes
are ``src`` (one row of a ``uint8 [m, row_bytes]`` weight) as ``d * q + m`` in float32,
multiply and add contracted to one FMA: within float32 rounding of the reference, not
bit-exact like ``decode_*.py`` (``dequantize`` and ``get_rows`` use those). A format's
class (formats.py, int8_formats.py) names its decoder here, if any, and its ``lanes``;
every other format goes through the exact ``rows.decode_row`` (`rows.decode_for_matmul`). The matmul
(gemm.py) decodes each weight row once per call into a tile, whatever the number of
tokens, so these loops set the cost of a one-token (decode) step.

Two details keep LLVM's vectorizer on the per-block loop:

- ``lanes`` (the bytes a block's inner loop walks: 16 or 32, `rows.LANES`) arrives at run
  time. With a constant trip count LLVM unrolls the loop and vectorizes *across* blocks
  with byte gathers, which is several times slower.
- Integer steps are wrapped in ``np.uint8``/``np.uint32``: numba widens integer
  arithmetic to int64, and the truncation lets LLVM narrow it back to byte/word lanes.

Scales are widened with the CPU's half-float conversion (``half_at``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from realm_numba.decode_kquants import k_scale_min
from realm_numba.scalars import JIT_FAST, half_at, half_to_f32, u32_as_f32

U8 = np.uint8
I8 = np.int8
U32 = np.uint32
# Inlined into the kernel (numba IR): with a call per row, decoding measured 15-25% slower.
INLINED = {**JIT_FAST, "inline": "always"}
# BIT[j] = 1 << j: testing ``qh & BIT[j]`` keeps 32-bit lanes, where numba would widen a
# variable shift ``qh >> j`` to 64 bits.
BIT = np.array([1 << j for j in range(32)], dtype=np.uint32)



@njit(**JIT_FAST)
def _five_bit(nibble, qh, j):
    """A Q5 quant as a float: its low ``nibble`` plus 16 when bit ``j`` of ``qh`` is set.

    The bits are joined as 32-bit integers and converted once: cheaper than converting
    the nibble and adding a selected 16.0 (one int-to-float per value instead of two ops).
    """
    high = U32(16) if U32(qh & BIT[j]) != 0 else U32(0)
    return np.float32(np.int32(U32(nibble) | high))


@njit(**JIT_FAST)
def _u32(src, o):
    return (
        U32(src[o])
        | (U32(src[o + 1]) << U32(8))
        | (U32(src[o + 2]) << U32(16))
        | (U32(src[o + 3]) << U32(24))
    )


@njit(**JIT_FAST)
def _i8f(byte):
    """A byte read as int8, as a float32 (a Q6_K scale)."""
    return np.float32(np.int8(byte))


@njit(**INLINED)
def f16_row(src, dst, lanes):
    """IEEE half floats (``vcvtph2ps``)."""
    halves = src.view(np.uint16)
    for i in range(dst.shape[0]):
        dst[i] = half_to_f32(halves[i])


@njit(**INLINED)
def bf16_row(src, dst, lanes):
    """bfloat16: the top half of a float32."""
    halves = src.view(np.uint16)
    for i in range(dst.shape[0]):
        dst[i] = u32_as_f32(U32(halves[i]) << U32(16))


@njit(**INLINED)
def q4_0_row(src, dst, lanes):
    """Q4_0: f16 d, 16 bytes of nibbles (low nibbles are values 0-15); x = d * (q - 8)."""
    for b in range(dst.shape[0] // 32):
        o = b * 18
        d = half_at(src, o)
        offset = np.float32(-8.0) * d
        for j in range(lanes):
            q = src[o + 2 + j]
            dst[b * 32 + j] = np.float32(U8(q & 15)) * d + offset
            dst[b * 32 + 16 + j] = np.float32(U8(q >> 4)) * d + offset


@njit(**INLINED)
def q4_1_row(src, dst, lanes):
    """Q4_1: f16 d, f16 m, 16 bytes of nibbles; x = d * q + m."""
    for b in range(dst.shape[0] // 32):
        o = b * 20
        d = half_at(src, o)
        m = half_at(src, o + 2)
        for j in range(lanes):
            q = src[o + 4 + j]
            dst[b * 32 + j] = np.float32(U8(q & 15)) * d + m
            dst[b * 32 + 16 + j] = np.float32(U8(q >> 4)) * d + m


@njit(**INLINED)
def q5_0_row(src, dst, lanes):
    """Q5_0: f16 d, the fifth bit of value j in bit j of a uint32, 16 bytes of nibbles; x = d * (q - 16)."""
    for b in range(dst.shape[0] // 32):
        o = b * 22
        d = half_at(src, o)
        offset = np.float32(-16.0) * d
        qh = _u32(src, o + 2)
        for j in range(lanes):
            q = src[o + 6 + j]
            dst[b * 32 + j] = _five_bit(U8(q & 15), qh, j) * d + offset
            dst[b * 32 + 16 + j] = _five_bit(U8(q >> 4), qh, j + 16) * d + offset


@njit(**INLINED)
def q5_1_row(src, dst, lanes):
    """Q5_1: f16 d, f16 m, fifth bits as in Q5_0, 16 bytes of nibbles; x = d * q + m."""
    for b in range(dst.shape[0] // 32):
        o = b * 24
        d = half_at(src, o)
        m = half_at(src, o + 2)
        qh = _u32(src, o + 4)
        for j in range(lanes):
            q = src[o + 8 + j]
            dst[b * 32 + j] = _five_bit(U8(q & 15), qh, j) * d + m
            dst[b * 32 + 16 + j] = _five_bit(U8(q >> 4), qh, j + 16) * d + m


@njit(**INLINED)
def q8_0_row(src, dst, lanes):
    """Q8_0: f16 d, 32 int8 q; x = d * q."""
    for b in range(dst.shape[0] // 32):
        o = b * 34
        d = half_at(src, o)
        for j in range(lanes):
            dst[b * 32 + j] = np.float32(I8(src[o + 2 + j])) * d


@njit(**INLINED)
def q4_k_row(src, dst, lanes):
    """Q4_K: per 32 values x = d*sc*q - dmin*m; 32 bytes hold two sub-blocks' nibbles."""
    for i in range(dst.shape[0] // 256):
        o = i * 144
        d = half_at(src, o)
        dmin = half_at(src, o + 2)
        for c in range(4):
            sc0, m0 = k_scale_min(src, o + 4, 2 * c)
            sc1, m1 = k_scale_min(src, o + 4, 2 * c + 1)
            d0, d1 = d * np.float32(sc0), d * np.float32(sc1)
            n0, n1 = -dmin * np.float32(m0), -dmin * np.float32(m1)
            base = i * 256 + 64 * c
            for j in range(lanes):
                q = src[o + 16 + 32 * c + j]
                dst[base + j] = np.float32(U8(q & 15)) * d0 + n0
                dst[base + 32 + j] = np.float32(U8(q >> 4)) * d1 + n1


@njit(**INLINED)
def q5_k_row(src, dst, lanes):
    """Q5_K: Q4_K plus a fifth bit per value from 32 shared bytes (bit = sub-block index)."""
    for i in range(dst.shape[0] // 256):
        o = i * 176
        d = half_at(src, o)
        dmin = half_at(src, o + 2)
        for c in range(4):
            sc0, m0 = k_scale_min(src, o + 4, 2 * c)
            sc1, m1 = k_scale_min(src, o + 4, 2 * c + 1)
            d0, d1 = d * np.float32(sc0), d * np.float32(sc1)
            n0, n1 = -dmin * np.float32(m0), -dmin * np.float32(m1)
            base = i * 256 + 64 * c
            mask0 = U8(1 << (2 * c))
            mask1 = U8(2 << (2 * c))
            for j in range(lanes):
                q = src[o + 48 + 32 * c + j]
                h = src[o + 16 + j]
                h0 = np.float32(16.0) if U8(h & mask0) != 0 else np.float32(0.0)
                h1 = np.float32(16.0) if U8(h & mask1) != 0 else np.float32(0.0)
                dst[base + j] = (np.float32(U8(q & 15)) + h0) * d0 + n0
                dst[base + 32 + j] = (np.float32(U8(q >> 4)) + h1) * d1 + n1


@njit(**INLINED)
def q6_k_row(src, dst, lanes):
    """Q6_K: x = d * scale * (q - 32), q = a nibble of ``ql`` plus 2 bits of ``qh``.

    Per 128 values: byte j of ``ql[0:32]``/``ql[32:64]`` holds sub-blocks 0/1 (low
    nibbles) and 2/3 (high nibbles); byte j of ``qh`` holds the top bits of all four.
    Each int8 scale covers 16 values, so the loop walks 16 bytes with four fixed scales
    (selecting a scale per value inside a 32-byte loop measured 1.5x slower). ``q - 32``
    is taken on bytes and read as int8: one conversion, no float subtraction.
    """
    for i in range(dst.shape[0] // 256):
        o = i * 210
        d = half_at(src, o + 208)
        for h in range(2):
            for g in range(2):  # values 0-15, then 16-31 of each sub-block
                ql = o + h * 64 + g * 16
                qh = o + 128 + h * 32 + g * 16
                base = i * 256 + h * 128 + g * 16
                sc = o + 192 + h * 8 + g
                s0, s1 = d * _i8f(src[sc]), d * _i8f(src[sc + 2])
                s2, s3 = d * _i8f(src[sc + 4]), d * _i8f(src[sc + 6])
                for j in range(lanes):
                    a = src[ql + j]
                    b = src[ql + 32 + j]
                    hb = src[qh + j]
                    dst[base + j] = np.float32(I8(U8(U8(a & 15) | U8(U8(hb & 3) << 4)) - U8(32))) * s0
                    dst[base + 32 + j] = np.float32(I8(U8(U8(b & 15) | U8(U8(hb & 12) << 2)) - U8(32))) * s1
                    dst[base + 64 + j] = np.float32(I8(U8(U8(a >> 4) | U8(hb & 48)) - U8(32))) * s2
                    dst[base + 96 + j] = np.float32(I8(U8(U8(b >> 4) | U8(U8(hb >> 2) & 48)) - U8(32))) * s3
