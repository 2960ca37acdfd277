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
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from realm_numba.decode_kquants import k_scale_min
from realm_numba.scalars import JIT_FAST, JIT_PARALLEL, half_at, half_to_f32, u32_as_f32

U8 = np.uint8
U32 = np.uint32


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
                    h0 = U32((qh >> U32(j)) & U32(1)) << U32(4)
                    h1 = U32((qh >> U32(j + 16)) & U32(1)) << U32(4)
                    s += (np.float32(U32(U32(q & 15) | h0)) * xt[b * 32 + j]
                          + np.float32(U32(U32(q >> 4) | h1)) * xt[b * 32 + 16 + j])
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
                    h0 = U32((qh >> U32(j)) & U32(1)) << U32(4)
                    h1 = U32((qh >> U32(j + 16)) & U32(1)) << U32(4)
                    s += (np.float32(U32(U32(q & 15) | h0)) * xt[b * 32 + j]
                          + np.float32(U32(U32(q >> 4) | h1)) * xt[b * 32 + 16 + j])
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
                    for j in range(lanes):
                        q = row[o + 48 + 32 * c + j]
                        h = row[o + 16 + j]
                        lo = U8(U8(q & 15) | U8(U8(U8(h >> (2 * c)) & 1) << 4))
                        hi = U8(U8(q >> 4) | U8(U8(U8(h >> (2 * c + 1)) & 1) << 4))
                        s0 += np.float32(lo) * xt[base + j]
                        s1 += np.float32(hi) * xt[base + 32 + j]
                    acc += d * (np.float32(sc0) * s0 + np.float32(sc1) * s1) - dmin * (
                        np.float32(m0) * xs[t, i * 8 + 2 * c] + np.float32(m1) * xs[t, i * 8 + 2 * c + 1])
            out[t, r] = acc


@njit(**JIT_PARALLEL)
def matvec_q6_k(x, w, out, lanes):
    """Q6_K: x = d * scale * (q - 32), 6-bit q from a nibble and 2 high bits, 16 values per scale."""
    n, k = x.shape
    xs = group_sums(x, 16)
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for i in range(k // 256):
                o = i * 210
                d = half_at(row, o + 208)
                for h in range(2):
                    for s in range(4):
                        lo_at = o + h * 64 + (s & 1) * 32
                        lo_shift = 4 * (s >> 1)
                        for g in range(2):
                            base = i * 256 + h * 128 + s * 32 + g * 16
                            acc16 = np.float32(0.0)
                            for j in range(lanes):
                                lo = U8(U8(row[lo_at + g * 16 + j] >> lo_shift) & 15)
                                hi = U8(U8(row[o + 128 + h * 32 + g * 16 + j] >> (2 * s)) & 3)
                                acc16 += np.float32(U8(lo | U8(hi << 4))) * xt[base + j]
                            scale = np.float32(np.int8(row[o + 192 + h * 8 + s * 2 + g]))
                            acc += d * scale * (acc16 - np.float32(32.0) * xs[t, base // 16])
            out[t, r] = acc
