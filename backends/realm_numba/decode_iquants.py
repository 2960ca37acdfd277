"""Block decoders for the lattice ("i-quant") formats: IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
IQ3_S, IQ1_S and IQ1_M.

The lattice tables are not retyped: they are read once at import from the class
attributes of ``gguf.quants`` (the same tables its reference decoder uses) and kept as
small integer arrays that numba freezes into the compiled code. Each decoder writes one
256-element block bit-identically to ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import numpy as np
from gguf import quants as gq
from numba import njit

from realm_numba.scalars import JIT, f16_at, f16_bits_to_f32, u16_at, u32_at


def _grid(cls, dtype) -> np.ndarray:
    """gguf's decoded lattice for ``cls`` as a compact ``[points, dims]`` integer table."""
    cls.init_grid()
    grid = np.asarray(cls.grid).reshape(cls.grid_shape)
    table = grid.astype(dtype)
    assert np.array_equal(table.astype(np.float32), grid), cls.__name__
    return np.ascontiguousarray(table)


GRID_IQ2_XXS = _grid(gq.IQ2_XXS, np.uint8)
GRID_IQ2_XS = _grid(gq.IQ2_XS, np.uint8)
GRID_IQ2_S = _grid(gq.IQ2_S, np.uint8)
GRID_IQ3_XXS = _grid(gq.IQ3_XXS, np.uint8)
GRID_IQ3_S = _grid(gq.IQ3_S, np.uint8)
GRID_IQ1_S = _grid(gq.IQ1_S, np.int8)  # IQ1_M shares it
KSIGNS = np.frombuffer(gq.IQ2_XXS.ksigns, dtype=np.uint8).copy()
IQ1_DELTA = np.float32(gq.IQ1_S.delta)


@njit(**JIT)
def _signed(value, negative):
    return -value if negative else value


@njit(**JIT)
def decode_iq2_xxs(src, o, dst, do):
    """IQ2_XXS: per 32 values, 4 grid indices and one word of 4x7 sign bits + 4-bit scale."""
    d = f16_at(src, o)
    for ib in range(8):
        aux1 = u32_at(src, o + 2 + 8 * ib + 4)
        db = d * (np.float32(0.5) + np.float32(aux1 >> np.uint32(28))) * np.float32(0.25)
        for g in range(4):
            point = src[o + 2 + 8 * ib + g]
            signs = KSIGNS[(aux1 >> np.uint32(7 * g)) & np.uint32(0x7F)]
            for c in range(8):
                v = db * np.float32(GRID_IQ2_XXS[point, c])
                dst[do + ib * 32 + g * 8 + c] = _signed(v, (signs >> c) & 1)


@njit(**JIT)
def _iq2_db(src, o_scales, d, g):
    """The IQ2_XS / IQ2_S scale of 8-value group ``g``: 4-bit scales, one per 16 values."""
    s = (np.int32(src[o_scales + (g >> 2)]) >> (4 * ((g >> 1) & 1))) & 0xF
    return d * (np.float32(0.5) + np.float32(s)) * np.float32(0.25)


@njit(**JIT)
def decode_iq2_xs(src, o, dst, do):
    """IQ2_XS: 32 uint16 holding a 9-bit grid index and a 7-bit sign index, then 8 scale bytes."""
    d = f16_at(src, o)
    for g in range(32):
        q = u16_at(src, o + 2 + 2 * g)
        db = _iq2_db(src, o + 66, d, g)
        point = q & np.uint32(511)
        signs = KSIGNS[q >> np.uint32(9)]
        for c in range(8):
            v = db * np.float32(GRID_IQ2_XS[point, c])
            dst[do + g * 8 + c] = _signed(v, (signs >> c) & 1)


@njit(**JIT)
def decode_iq2_s(src, o, dst, do):
    """IQ2_S: 8 low index bits, 32 bytes of explicit signs, 2 high index bits, 4-bit scales."""
    d = f16_at(src, o)
    for g in range(32):
        high = (np.int32(src[o + 66 + (g >> 2)]) >> (2 * (g & 3))) & 3
        point = np.int32(src[o + 2 + g]) | (high << 8)
        db = _iq2_db(src, o + 74, d, g)
        signs = np.int32(src[o + 34 + g])
        for c in range(8):
            v = db * np.float32(GRID_IQ2_S[point, c])
            dst[do + g * 8 + c] = _signed(v, (signs >> c) & 1)


@njit(**JIT)
def decode_iq3_xxs(src, o, dst, do):
    """IQ3_XXS: 64 grid indices (4 values each), then per 32 values 4x7 sign bits + 4-bit scale."""
    d = f16_at(src, o)
    for ib in range(8):
        aux = u32_at(src, o + 66 + 4 * ib)
        db = d * (np.float32(0.5) + np.float32(aux >> np.uint32(28))) * np.float32(0.5)
        for g in range(4):
            signs = KSIGNS[(aux >> np.uint32(7 * g)) & np.uint32(0x7F)]
            for c in range(8):
                point = src[o + 2 + ib * 8 + g * 2 + (c >> 2)]
                v = db * np.float32(GRID_IQ3_XXS[point, c & 3])
                dst[do + ib * 32 + g * 8 + c] = _signed(v, (signs >> c) & 1)


@njit(**JIT)
def decode_iq3_s(src, o, dst, do):
    """IQ3_S: 64 low index bytes, 8 bytes of ninth bits, 32 sign bytes, 4-bit odd scales."""
    d = f16_at(src, o)
    for ib in range(8):
        s = (np.int32(src[o + 106 + (ib >> 1)]) >> (4 * (ib & 1))) & 0xF
        db = d * np.float32(1 + 2 * s)
        for k in range(8):
            g = ib * 8 + k
            high = (np.int32(src[o + 66 + (g >> 3)]) >> (g & 7)) & 1
            point = np.int32(src[o + 2 + g]) | (high << 8)
            signs = np.int32(src[o + 74 + (g >> 1)]) >> (4 * (g & 1))
            for c in range(4):
                v = db * np.float32(GRID_IQ3_S[point, c])
                dst[do + g * 4 + c] = _signed(v, (signs >> c) & 1)


@njit(**JIT)
def decode_iq1_s(src, o, dst, do):
    """IQ1_S: 32 low index bytes, per 32 values a uint16 of 3-bit highs, scale and delta sign."""
    d = f16_at(src, o)
    for ib in range(8):
        qh = np.int32(u16_at(src, o + 34 + 2 * ib))
        dl = d * np.float32(2 * ((qh >> 12) & 7) + 1)
        delta = -IQ1_DELTA if qh & 0x8000 else IQ1_DELTA
        for g in range(4):
            point = np.int32(src[o + 2 + 4 * ib + g]) | (((qh >> (3 * g)) & 7) << 8)
            for c in range(8):
                dst[do + ib * 32 + g * 8 + c] = dl * (np.float32(GRID_IQ1_S[point, c]) + delta)


@njit(**JIT)
def decode_iq1_m(src, o, dst, do):
    """IQ1_M: IQ1_S's grid with a delta per 8 values and an f16 scale spread over 4 nibbles."""
    sc0 = np.int32(u16_at(src, o + 48))
    sc1 = np.int32(u16_at(src, o + 50))
    sc2 = np.int32(u16_at(src, o + 52))
    sc3 = np.int32(u16_at(src, o + 54))
    d_bits = ((sc0 & 0xF000) >> 12) | ((sc1 & 0xF000) >> 8) | ((sc2 & 0xF000) >> 4) | (sc3 & 0xF000)
    d = f16_bits_to_f32(d_bits)
    for g in range(32):
        i = g >> 1  # one 3-bit scale per 16 values
        sc_word = np.int32(u16_at(src, o + 48 + 2 * (i >> 2)))
        dl = d * np.float32(2 * ((sc_word >> (3 * (i & 3))) & 7) + 1)
        hv = np.int32(src[o + 32 + (g >> 1)]) >> (4 * (g & 1))
        point = np.int32(src[o + g]) | ((hv & 7) << 8)
        delta = -IQ1_DELTA if hv & 8 else IQ1_DELTA
        for c in range(8):
            dst[do + g * 8 + c] = dl * (np.float32(GRID_IQ1_S[point, c]) + delta)
