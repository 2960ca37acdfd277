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
def _high_bit(qh, j):
    """16.0 when bit ``j`` of ``qh`` is set, else 0.0 (the fifth bit of a Q5 quant, in place)."""
    return np.float32(16.0) if U32(qh & BIT[j]) != 0 else np.float32(0.0)


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
                    s += ((np.float32(U8(q & 15)) + _high_bit(qh, j)) * xt[b * 32 + j]
                          + (np.float32(U8(q >> 4)) + _high_bit(qh, j + 16)) * xt[b * 32 + 16 + j])
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
                    s += ((np.float32(U8(q & 15)) + _high_bit(qh, j)) * xt[b * 32 + j]
                          + (np.float32(U8(q >> 4)) + _high_bit(qh, j + 16)) * xt[b * 32 + 16 + j])
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
    Each 32-value sub-block has two scales; the loop runs over all 32 values (a 16-long
    loop would fall into LLVM's narrow remainder path) and also sums the upper 16 apart.
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
                    s0 = s1 = s2 = s3 = zero  # all 32 values of sub-blocks 0..3
                    u0 = u1 = u2 = u3 = zero  # their upper 16 values
                    for j in range(lanes):
                        a = row[ql + j]
                        b = row[ql + 32 + j]
                        hb = row[qh + j]
                        v0 = np.float32(U8(U8(a & 15) | U8(U8(hb & 3) << 4))) * xt[base + j]
                        v1 = np.float32(U8(U8(b & 15) | U8(U8(hb & 12) << 2))) * xt[base + 32 + j]
                        v2 = np.float32(U8(U8(a >> 4) | U8(hb & 48))) * xt[base + 64 + j]
                        v3 = np.float32(U8(U8(b >> 4) | U8(U8(hb >> 2) & 48))) * xt[base + 96 + j]
                        s0 += v0
                        s1 += v1
                        s2 += v2
                        s3 += v3
                        upper = j >= 16
                        u0 += v0 if upper else zero
                        u1 += v1 if upper else zero
                        u2 += v2 if upper else zero
                        u3 += v3 if upper else zero
                    sc = o + 192 + h * 8
                    g = base // 16
                    acc += d * (_q6_pair(row, sc, s0, u0, xs[t], g)
                                + _q6_pair(row, sc + 2, s1, u1, xs[t], g + 2)
                                + _q6_pair(row, sc + 4, s2, u2, xs[t], g + 4)
                                + _q6_pair(row, sc + 6, s3, u3, xs[t], g + 6))
            out[t, r] = acc


@njit(**JIT_FAST)
def _q6_pair(row, sc, total, upper, xs, g):
    """One Q6_K sub-block's sum: two int8 scales over its lower and upper 16 values."""
    lower = total - upper
    return (np.float32(np.int8(row[sc])) * (lower - np.float32(32.0) * xs[g])
            + np.float32(np.int8(row[sc + 1])) * (upper - np.float32(32.0) * xs[g + 1]))
