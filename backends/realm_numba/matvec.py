"""Fused dequantize-and-dot kernels for a few tokens at a time (decode).

``matvec_<type>(x, w, out, lanes)``: ``x [n, k]`` float32, ``w [m, row_bytes]`` raw
blocks, ``out [n, m] = x @ decode(w).T``. Each weight byte is read once per token from
L1 (the row stays cached across the ``n`` tokens) and never written out as floats.

Two details keep LLVM's vectorizer on the per-block loop:

- ``lanes`` (16 or 32, the bytes a block's inner loop walks) arrives at run time. With a
  constant trip count LLVM unrolls the block loop and vectorizes *across* blocks with
  byte gathers, which is several times slower.
- Integer steps are wrapped in ``np.uint8``/``np.uint32``: numba widens integer
  arithmetic to int64, and the truncation lets LLVM narrow it back to byte/word lanes.

Scales are widened with the CPU's half-float conversion (``half_at``). Sums of ``x``
per block (for the min/offset terms) are computed once per call, not per row.

Activations stay float32 (llama.cpp instead quantizes them to 8 bits and takes integer
dot products). The results then match the reference to float32 rounding, and nothing is
lost: numba types integer arithmetic as int64, so an int8 x int8 loop vectorizes no
wider than this float one.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from realm_numba.decode_kquants import k_scale_min
from realm_numba.scalars import JIT_FAST, JIT_PARALLEL, half_at, half_to_f32, u32_as_f32

U8 = np.uint8
U32 = np.uint32
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
def group_sums(x, group):
    """``out[t, g] = sum(x[t, g*group:(g+1)*group])``."""
    n, k = x.shape
    out = np.empty((n, k // group), dtype=np.float32)
    for t in range(n):
        for g in range(k // group):
            s = np.float32(0.0)
            for j in range(group):
                s += x[t, g * group + j]
            out[t, g] = s
    return out


@njit(**JIT_PARALLEL)
def matvec_f32(x, w, out, lanes):
    """Float32 weights ``w [m, k]``."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for i in range(k):
                acc += row[i] * xt[i]
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_f16(x, w, out, lanes):
    """Half-float weights, ``w`` viewed as ``uint16 [m, k]``."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for i in range(k):
                acc += half_to_f32(row[i]) * xt[i]
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_bf16(x, w, out, lanes):
    """bfloat16 weights, ``w`` viewed as ``uint16 [m, k]``: the top half of a float32."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for i in range(k):
                acc += u32_as_f32(U32(row[i]) << U32(16)) * xt[i]
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q4_0(x, w, out, lanes):
    """Q4_0: x = d * (q - 8), so dot = d * (sum(q * x) - 8 * sum(x))."""
    n, k = x.shape
    xs = group_sums(x, 32)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for b in range(k // 32):
                o = b * 18
                s = np.float32(0.0)
                for j in range(lanes):
                    q = row[o + 2 + j]
                    s += (np.float32(U8(q & 15)) * xt[b * 32 + j]
                          + np.float32(U8(q >> 4)) * xt[b * 32 + 16 + j])
                acc += half_at(row, o) * (s - np.float32(8.0) * xs[t, b])
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q4_1(x, w, out, lanes):
    """Q4_1: x = d * q + m, so dot = d * sum(q * x) + m * sum(x)."""
    n, k = x.shape
    xs = group_sums(x, 32)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for b in range(k // 32):
                o = b * 20
                s = np.float32(0.0)
                for j in range(lanes):
                    q = row[o + 4 + j]
                    s += (np.float32(U8(q & 15)) * xt[b * 32 + j]
                          + np.float32(U8(q >> 4)) * xt[b * 32 + 16 + j])
                acc += half_at(row, o) * s + half_at(row, o + 2) * xs[t, b]
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q5_0(x, w, out, lanes):
    """Q5_0: x = d * (q - 16) with the fifth bit of element j in bit j of a uint32."""
    n, k = x.shape
    xs = group_sums(x, 32)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for b in range(k // 32):
                o = b * 22
                qh = (U32(row[o + 2]) | (U32(row[o + 3]) << U32(8))
                      | (U32(row[o + 4]) << U32(16)) | (U32(row[o + 5]) << U32(24)))
                s = np.float32(0.0)
                for j in range(lanes):
                    q = row[o + 6 + j]
                    s += (_five_bit(U8(q & 15), qh, j) * xt[b * 32 + j]
                          + _five_bit(U8(q >> 4), qh, j + 16) * xt[b * 32 + 16 + j])
                acc += half_at(row, o) * (s - np.float32(16.0) * xs[t, b])
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q5_1(x, w, out, lanes):
    """Q5_1: x = d * q + m with a fifth bit per element, as in Q5_0."""
    n, k = x.shape
    xs = group_sums(x, 32)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for b in range(k // 32):
                o = b * 24
                qh = (U32(row[o + 4]) | (U32(row[o + 5]) << U32(8))
                      | (U32(row[o + 6]) << U32(16)) | (U32(row[o + 7]) << U32(24)))
                s = np.float32(0.0)
                for j in range(lanes):
                    q = row[o + 8 + j]
                    s += (_five_bit(U8(q & 15), qh, j) * xt[b * 32 + j]
                          + _five_bit(U8(q >> 4), qh, j + 16) * xt[b * 32 + 16 + j])
                acc += half_at(row, o) * s + half_at(row, o + 2) * xs[t, b]
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q8_0(x, w, out, lanes):
    """Q8_0: x = d * q for 32 int8 q."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for b in range(k // 32):
                o = b * 34
                s = np.float32(0.0)
                for j in range(lanes):
                    s += np.float32(np.int8(row[o + 2 + j])) * xt[b * 32 + j]
                acc += half_at(row, o) * s
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q4_k(x, w, out, lanes):
    """Q4_K: per 32 values x = d*sc*q - dmin*m; 32 bytes hold two sub-blocks' nibbles."""
    n, k = x.shape
    xs = group_sums(x, 32)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for i in range(k // 256):
                o = i * 144
                d = half_at(row, o)
                dmin = half_at(row, o + 2)
                for c in range(4):
                    sc0, m0 = k_scale_min(row, o + 4, 2 * c)
                    sc1, m1 = k_scale_min(row, o + 4, 2 * c + 1)
                    base = i * 256 + 64 * c
                    s0 = np.float32(0.0)
                    s1 = np.float32(0.0)
                    for j in range(lanes):
                        q = row[o + 16 + 32 * c + j]
                        s0 += np.float32(U8(q & 15)) * xt[base + j]
                        s1 += np.float32(U8(q >> 4)) * xt[base + 32 + j]
                    acc += d * (np.float32(sc0) * s0 + np.float32(sc1) * s1) - dmin * (
                        np.float32(m0) * xs[t, i * 8 + 2 * c] + np.float32(m1) * xs[t, i * 8 + 2 * c + 1])
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q5_k(x, w, out, lanes):
    """Q5_K: Q4_K plus a fifth bit per value from 32 shared bytes (bit = sub-block index)."""
    n, k = x.shape
    xs = group_sums(x, 32)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for i in range(k // 256):
                o = i * 176
                d = half_at(row, o)
                dmin = half_at(row, o + 2)
                for c in range(4):
                    sc0, m0 = k_scale_min(row, o + 4, 2 * c)
                    sc1, m1 = k_scale_min(row, o + 4, 2 * c + 1)
                    base = i * 256 + 64 * c
                    s0 = np.float32(0.0)
                    s1 = np.float32(0.0)
                    mask0 = U8(1 << (2 * c))
                    mask1 = U8(2 << (2 * c))
                    for j in range(lanes):
                        q = row[o + 48 + 32 * c + j]
                        h = row[o + 16 + j]
                        h0 = np.float32(16.0) if U8(h & mask0) != 0 else np.float32(0.0)
                        h1 = np.float32(16.0) if U8(h & mask1) != 0 else np.float32(0.0)
                        s0 += (np.float32(U8(q & 15)) + h0) * xt[base + j]
                        s1 += (np.float32(U8(q >> 4)) + h1) * xt[base + 32 + j]
                    acc += d * (np.float32(sc0) * s0 + np.float32(sc1) * s1) - dmin * (
                        np.float32(m0) * xs[t, i * 8 + 2 * c] + np.float32(m1) * xs[t, i * 8 + 2 * c + 1])
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q6_k(x, w, out, lanes):
    """Q6_K: x = d * scale * (q - 32), q = a nibble of ``ql`` plus 2 bits of ``qh``.

    Per 128 values: byte j of ``ql[0:32]``/``ql[32:64]`` holds sub-blocks 0/1 (low
    nibbles) and 2/3 (high nibbles); byte j of ``qh`` holds the top bits of all four.
    Each 32-value sub-block has two int8 scales, one per 16 values. The loop runs over
    all 32 values (a 16-long loop would fall into LLVM's narrow remainder path) and
    multiplies each product by its scale, picked by ``j >= 16``: one select and one
    multiply per value, cheaper than summing the upper 16 values apart. The ``- 32``
    offsets come out of the loop as ``32 * sum(scale * sum(x))`` per 16 values.
    """
    n, k = x.shape
    xs = group_sums(x, 16)
    zero = np.float32(0.0)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = zero
            for i in range(k // 256):
                o = i * 210
                d = half_at(row, o + 208)
                for h in range(2):
                    ql = o + h * 64
                    qh = o + 128 + h * 32
                    base = i * 256 + h * 128
                    sc = o + 192 + h * 8
                    lo0, hi0 = _i8f(row[sc]), _i8f(row[sc + 1])  # sub-block 0: values < 16, >= 16
                    lo1, hi1 = _i8f(row[sc + 2]), _i8f(row[sc + 3])
                    lo2, hi2 = _i8f(row[sc + 4]), _i8f(row[sc + 5])
                    lo3, hi3 = _i8f(row[sc + 6]), _i8f(row[sc + 7])
                    s = zero
                    for j in range(lanes):
                        a = row[ql + j]
                        b = row[ql + 32 + j]
                        hb = row[qh + j]
                        upper = j >= 16
                        s += (np.float32(U8(U8(a & 15) | U8(U8(hb & 3) << 4))) * xt[base + j]
                              * (hi0 if upper else lo0)
                              + np.float32(U8(U8(b & 15) | U8(U8(hb & 12) << 2))) * xt[base + 32 + j]
                              * (hi1 if upper else lo1)
                              + np.float32(U8(U8(a >> 4) | U8(hb & 48))) * xt[base + 64 + j]
                              * (hi2 if upper else lo2)
                              + np.float32(U8(U8(b >> 4) | U8(U8(hb >> 2) & 48))) * xt[base + 96 + j]
                              * (hi3 if upper else lo3))
                    g = base // 16
                    xg = xs[t]
                    offset = (lo0 * xg[g] + hi0 * xg[g + 1] + lo1 * xg[g + 2] + hi1 * xg[g + 3]
                              + lo2 * xg[g + 4] + hi2 * xg[g + 5] + lo3 * xg[g + 6] + hi3 * xg[g + 7])
                    acc += d * (s - np.float32(32.0) * offset)
            out[t, r] = acc


@njit(**JIT_FAST)
def _i8f(byte):
    """A byte read as int8, as a float32 (a Q6_K scale)."""
    return np.float32(np.int8(byte))
