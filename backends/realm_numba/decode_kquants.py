"""Block decoders for the 256-element super-block formats: k-quants, IQ4_XS, TQ1_0, TQ2_0.

Same contract as ``decode_simple``: ``decode_<type>(src, o, dst, do)`` writes one
256-element block bit-identically to ``gguf.quants.dequantize``. Byte offsets are
those of ggml's block structs (ggml/src/ggml-common.h).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from realm_numba.decode_simple import KVALUES_IQ4NL
from realm_numba.scalars import JIT, f16_at, u16_at

POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int32)


@njit(**JIT)
def k_scale_min(src, o, i):
    """Sub-block ``i``'s 6-bit (scale, min) from the 12 packed bytes at ``src[o]`` (Q4_K, Q5_K)."""
    if i < 4:
        return np.int32(src[o + i]) & 63, np.int32(src[o + i + 4]) & 63
    sc = (np.int32(src[o + i + 4]) & 0xF) | ((np.int32(src[o + i - 4]) >> 2) & 0x30)
    mn = (np.int32(src[o + i + 4]) >> 4) | ((np.int32(src[o + i]) >> 2) & 0x30)
    return sc, mn


@njit(**JIT)
def decode_q2_k(src, o, dst, do):
    """Q2_K: 16 scale/min nibble pairs, 64 bytes of 2-bit quants, f16 d, f16 dmin."""
    d = f16_at(src, o + 80)
    dmin = f16_at(src, o + 82)
    for half in range(2):
        for s in range(4):
            for g in range(2):  # 16 values per scale
                e0 = half * 128 + s * 32 + g * 16
                sc = np.int32(src[o + (e0 >> 4)])
                dl = d * np.float32(sc & 0xF)
                ml = dmin * np.float32(sc >> 4)
                for j in range(g * 16, g * 16 + 16):
                    q = (np.int32(src[o + 16 + half * 32 + j]) >> (2 * s)) & 3
                    dst[do + half * 128 + s * 32 + j] = dl * np.float32(q) - ml


@njit(**JIT)
def q3_k_scale(src, o, i):
    """Sub-block ``i``'s signed 6-bit scale from Q3_K's 12 packed scale bytes at ``src[o]``."""
    low = np.int32(src[o + i]) & 0xF if i < 8 else np.int32(src[o + i - 8]) >> 4
    high = (np.int32(src[o + 8 + (i & 3)]) >> (2 * (i >> 2))) & 3
    return (low | (high << 4)) - 32


@njit(**JIT)
def decode_q3_k(src, o, dst, do):
    """Q3_K: 32 bytes of high bits, 64 bytes of 2-bit quants, 12 scale bytes, f16 d."""
    d = f16_at(src, o + 108)
    for half in range(2):
        for s in range(4):
            for g in range(2):  # 16 values per scale
                e0 = half * 128 + s * 32 + g * 16
                dl = d * np.float32(q3_k_scale(src, o + 96, e0 >> 4))
                for j in range(g * 16, g * 16 + 16):
                    low = (np.int32(src[o + 32 + half * 32 + j]) >> (2 * s)) & 3
                    high = (np.int32(src[o + j]) >> (half * 4 + s)) & 1
                    dst[do + half * 128 + s * 32 + j] = dl * np.float32(low - 4 * (high ^ 1))


@njit(**JIT)
def decode_q4_k(src, o, dst, do):
    """Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles; x = d*sc*q - dmin*m."""
    d = f16_at(src, o)
    dmin = f16_at(src, o + 2)
    for sub in range(8):
        sc, mn = k_scale_min(src, o + 4, sub)
        dsc = d * np.float32(sc)
        dm = dmin * np.float32(mn)
        base = o + 16 + (sub >> 1) * 32
        shift = 4 * (sub & 1)
        for j in range(32):
            q = (np.int32(src[base + j]) >> shift) & 0xF
            dst[do + sub * 32 + j] = dsc * np.float32(q) - dm


@njit(**JIT)
def decode_q5_k(src, o, dst, do):
    """Q5_K: Q4_K plus 32 bytes holding the fifth bit of every quant."""
    d = f16_at(src, o)
    dmin = f16_at(src, o + 2)
    for sub in range(8):
        sc, mn = k_scale_min(src, o + 4, sub)
        dsc = d * np.float32(sc)
        dm = dmin * np.float32(mn)
        base = o + 48 + (sub >> 1) * 32
        shift = 4 * (sub & 1)
        for j in range(32):
            q = ((np.int32(src[base + j]) >> shift) & 0xF) | (((np.int32(src[o + 16 + j]) >> sub) & 1) << 4)
            dst[do + sub * 32 + j] = dsc * np.float32(q) - dm


@njit(**JIT)
def decode_q6_k(src, o, dst, do):
    """Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, f16 d."""
    d = f16_at(src, o + 208)
    for half in range(2):
        for s in range(4):
            for g in range(2):  # 16 values per scale
                dl = d * np.float32(np.int8(src[o + 192 + half * 8 + s * 2 + g]))
                for j in range(g * 16, g * 16 + 16):
                    low = (np.int32(src[o + half * 64 + (s & 1) * 32 + j]) >> (4 * (s >> 1))) & 0xF
                    high = (np.int32(src[o + 128 + half * 32 + j]) >> (2 * s)) & 3
                    dst[do + half * 128 + s * 32 + j] = dl * np.float32((low | (high << 4)) - 32)


@njit(**JIT)
def decode_iq4_xs(src, o, dst, do):
    """IQ4_XS: f16 d, 6-bit sub-block scales split in two fields, nibbles indexing IQ4_NL levels."""
    d = f16_at(src, o)
    scales_h = np.int32(u16_at(src, o + 2))
    for ib in range(8):
        low = (np.int32(src[o + 4 + (ib >> 1)]) >> (4 * (ib & 1))) & 0xF
        high = (scales_h >> (2 * ib)) & 3
        dl = d * np.float32((low | (high << 4)) - 32)
        for j in range(16):
            q = np.int32(src[o + 8 + ib * 16 + j])
            dst[do + ib * 32 + j] = dl * np.float32(KVALUES_IQ4NL[q & 0xF])
            dst[do + ib * 32 + 16 + j] = dl * np.float32(KVALUES_IQ4NL[q >> 4])


@njit(**JIT)
def _ternary(byte, power):
    """One base-3 digit of a TQ1_0 byte: the top 8 bits of ``(byte * 3**n mod 256) * 3``, minus 1."""
    v = (np.int32(byte) * power) & 0xFF
    return ((v * 3) >> 8) - 1


@njit(**JIT)
def decode_tq1_0(src, o, dst, do):
    """TQ1_0: ternary digits packed five per byte (48 bytes) and four per byte (4 bytes), f16 d."""
    d = f16_at(src, o + 52)
    for n in range(5):
        for j in range(32):
            dst[do + n * 32 + j] = d * np.float32(_ternary(src[o + j], POW3[n]))
        for j in range(16):
            dst[do + 160 + n * 16 + j] = d * np.float32(_ternary(src[o + 32 + j], POW3[n]))
    for n in range(4):
        for j in range(4):
            dst[do + 240 + n * 4 + j] = d * np.float32(_ternary(src[o + 48 + j], POW3[n]))


@njit(**JIT)
def decode_tq2_0(src, o, dst, do):
    """TQ2_0: 2-bit ternary codes (64 bytes), f16 d; x = d * (q - 1)."""
    d = f16_at(src, o + 64)
    for half in range(2):
        for s in range(4):
            for j in range(32):
                q = ((np.int32(src[o + half * 32 + j]) >> (2 * s)) & 3) - 1
                dst[do + half * 128 + s * 32 + j] = d * np.float32(q)
