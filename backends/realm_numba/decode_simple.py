"""Block decoders for the 32- and 64-element formats and the plain float types.

Each ``decode_<type>(src, o, dst, do)`` writes the block whose bytes start at
``src[o]`` as float32 into ``dst[do:do + block_size]``. The arithmetic follows
``gguf.quants`` operation by operation in float32 (no fused multiply-add, no
reassociation), so results are bit-identical to ``gguf.quants.dequantize``.
Layouts are ggml's (ggml/src/ggml-common.h).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from realm_numba.scalars import (
    JIT,
    e8m0_half_to_f32,
    f16_at,
    f16_bits_to_f32,
    u32_as_f32,
    u32_at,
    u64_as_f64,
    ue4m3_half_to_f32,
)

# The 16 non-linear levels of IQ4_NL / IQ4_XS and the doubled E2M1 values of MXFP4 / NVFP4.
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                          1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
KVALUES_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)


@njit(**JIT)
def decode_f32_row(src, dst):
    """A row of little-endian float32."""
    for i in range(dst.shape[0]):
        dst[i] = u32_as_f32(u32_at(src, 4 * i))


@njit(**JIT)
def decode_f16_row(src, dst):
    """A row of IEEE half floats."""
    for i in range(dst.shape[0]):
        dst[i] = f16_bits_to_f32(np.uint32(src[2 * i]) | (np.uint32(src[2 * i + 1]) << np.uint32(8)))


@njit(**JIT)
def decode_bf16_row(src, dst):
    """A row of bfloat16: the top half of a float32's bits."""
    for i in range(dst.shape[0]):
        bits = (np.uint32(src[2 * i]) << np.uint32(16)) | (np.uint32(src[2 * i + 1]) << np.uint32(24))
        dst[i] = u32_as_f32(bits)


@njit(**JIT)
def _u64_at(src, o):
    return np.uint64(u32_at(src, o)) | (np.uint64(u32_at(src, o + 4)) << np.uint64(32))


@njit(**JIT)
def decode_f64_row(src, dst):
    """A row of little-endian float64, rounded to float32."""
    for i in range(dst.shape[0]):
        dst[i] = np.float32(u64_as_f64(_u64_at(src, 8 * i)))


@njit(**JIT)
def decode_int_row(src, dst, width):
    """A row of little-endian signed integers of ``width`` bytes, rounded to float32."""
    for i in range(dst.shape[0]):
        o = width * i
        if width == 1:
            dst[i] = np.float32(np.int8(src[o]))
        elif width == 2:
            dst[i] = np.float32(np.int16(np.uint32(src[o]) | (np.uint32(src[o + 1]) << np.uint32(8))))
        elif width == 4:
            dst[i] = np.float32(np.int32(u32_at(src, o)))
        else:
            dst[i] = np.float32(np.int64(_u64_at(src, o)))


@njit(**JIT)
def decode_q4_0(src, o, dst, do):
    """Q4_0: f16 d, 16 bytes of nibbles (low nibbles are elements 0-15); x = d * (q - 8)."""
    d = f16_at(src, o)
    for j in range(16):
        q = np.int32(src[o + 2 + j])
        dst[do + j] = d * np.float32((q & 0xF) - 8)
        dst[do + j + 16] = d * np.float32((q >> 4) - 8)


@njit(**JIT)
def decode_q4_1(src, o, dst, do):
    """Q4_1: f16 d, f16 m, 16 bytes of nibbles; x = d * q + m."""
    d = f16_at(src, o)
    m = f16_at(src, o + 2)
    for j in range(16):
        q = np.int32(src[o + 4 + j])
        dst[do + j] = d * np.float32(q & 0xF) + m
        dst[do + j + 16] = d * np.float32(q >> 4) + m


@njit(**JIT)
def decode_q5_0(src, o, dst, do):
    """Q5_0: f16 d, 32 high bits, 16 bytes of low nibbles; x = d * (q - 16)."""
    d = f16_at(src, o)
    qh = u32_at(src, o + 2)
    for j in range(16):
        q = np.int32(src[o + 6 + j])
        h0 = np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4
        h1 = np.int32((qh >> np.uint32(j + 16)) & np.uint32(1)) << 4
        dst[do + j] = d * np.float32(((q & 0xF) | h0) - 16)
        dst[do + j + 16] = d * np.float32(((q >> 4) | h1) - 16)


@njit(**JIT)
def decode_q5_1(src, o, dst, do):
    """Q5_1: f16 d, f16 m, 32 high bits, 16 bytes of low nibbles; x = d * q + m."""
    d = f16_at(src, o)
    m = f16_at(src, o + 2)
    qh = u32_at(src, o + 4)
    for j in range(16):
        q = np.int32(src[o + 8 + j])
        h0 = np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4
        h1 = np.int32((qh >> np.uint32(j + 16)) & np.uint32(1)) << 4
        dst[do + j] = d * np.float32((q & 0xF) | h0) + m
        dst[do + j + 16] = d * np.float32((q >> 4) | h1) + m


@njit(**JIT)
def decode_q8_0(src, o, dst, do):
    """Q8_0: f16 d, 32 int8; x = q * d."""
    d = f16_at(src, o)
    for j in range(32):
        dst[do + j] = np.float32(np.int8(src[o + 2 + j])) * d


@njit(**JIT)
def decode_iq4_nl(src, o, dst, do):
    """IQ4_NL: f16 d, 16 bytes of nibbles indexing the non-linear levels; x = d * level."""
    d = f16_at(src, o)
    for j in range(16):
        q = np.int32(src[o + 2 + j])
        dst[do + j] = d * np.float32(KVALUES_IQ4NL[q & 0xF])
        dst[do + j + 16] = d * np.float32(KVALUES_IQ4NL[q >> 4])


@njit(**JIT)
def decode_mxfp4(src, o, dst, do):
    """MXFP4: E8M0 exponent byte, 16 bytes of E2M1 nibbles (doubled values, halved scale)."""
    d = e8m0_half_to_f32(src[o])
    for j in range(16):
        q = np.int32(src[o + 1 + j])
        dst[do + j] = d * np.float32(KVALUES_FP4[q & 0xF])
        dst[do + j + 16] = d * np.float32(KVALUES_FP4[q >> 4])


@njit(**JIT)
def decode_nvfp4(src, o, dst, do):
    """NVFP4 (64 elements): four UE4M3 scales, each for 16 E2M1 values stored in 8 bytes."""
    for s in range(4):
        d = ue4m3_half_to_f32(src[o + s])
        base = o + 4 + 8 * s
        for j in range(8):
            q = np.int32(src[base + j])
            dst[do + 16 * s + j] = d * np.float32(KVALUES_FP4[q & 0xF])
            dst[do + 16 * s + 8 + j] = d * np.float32(KVALUES_FP4[q >> 4])
