"""Each weight format's part in the integer matmul: its quants as LLVM IR, its scales in numba.

A format is one class, registered by subclassing `Int8Format` (``__init_subclass__``),
with its block size taken from gguf's type table. The matmul (gemm_q16.py) splits a
weight row into 32-value blocks and needs two things per format:

- ``quants(b, row, blk, isa)``: IR giving block ``blk``'s 32 quants as ``<32 x i8>``,
  unsigned (``signed = False``, with the format's offset folded into a per-block min) or
  signed (Q8_0, Q6_K, and IQ4_NL / IQ4_XS, whose nibbles index gguf's 16 levels);
- ``scales(b, row, blk, sc, mn)``: IR giving the block's scales in dot32's lane layout
  (lanes 0-3 and 4-7: one per 16 values, the same in both unless ``two_scales``) and its
  min (None for signed formats). The 32-value formats read
  their f16 scale where it is; the K-quants' and IQ4_XS's packed scales are unpacked once
  per row by `row_scales` (numba) into ``sc`` (two per block) and ``mn`` (one per block).

Layouts are ggml's (ggml/src/ggml-common.h); `realm.quants` holds the exact decoders.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import IQ4_NL as _GGUF_IQ4_NL
from llvmlite import ir
from numba import njit

from realm.gguf.types import GGMLType
from realm_numba.decode_kquants import k_scale_min
from realm_numba.scalars import JIT, half_at
from realm_numba.vector_ir import (
    F32,
    I8,
    I32,
    V8F32,
    V16I8,
    V32I8,
    broadcast,
    function,
    i64,
    join16,
    load_scalar,
    load_vector,
    mask,
    splat,
)

FORMATS: dict[int, type[Int8Format]] = {}
IQ4_NL_LEVELS = _GGUF_IQ4_NL.kvalues  # IQ4_NL's and IQ4_XS's 16 levels, as gguf holds them


class Int8Format:
    """One GGML type's quants for `dot_ir`; subclasses register themselves."""

    ggml: ClassVar[GGMLType]
    signed: ClassVar[bool] = False  # quants are int8 (else uint8 with a per-block min)
    two_scales: ClassVar[bool] = False  # a scale per 16 values (else one per 32-value block)
    block_values: ClassVar[int]  # values per GGML block
    block_bytes: ClassVar[int]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "ggml" in cls.__dict__:  # a format, not a family of them
            cls.block_values, cls.block_bytes = GGML_QUANT_SIZES[cls.ggml]
            FORMATS[int(cls.ggml)] = cls

    @classmethod
    def block_offset(cls, b, blk):
        """Byte offset of the GGML block holding 32-value block ``blk``, and ``blk``'s place in it."""
        per_block = cls.block_values // 32
        if per_block == 1:
            return b.mul(blk, i64(cls.block_bytes)), None
        return b.mul(b.udiv(blk, i64(per_block)), i64(cls.block_bytes)), b.urem(blk, i64(per_block))

    @classmethod
    def quants(cls, b, row, blk, isa):  # pragma: no cover - every registered format overrides it
        raise NotImplementedError

    @classmethod
    def scales(cls, b, row, blk, sc, mn):
        """From `row_scales`' arrays: ``sc[2blk]`` for lanes 0-3, ``sc[2blk+1]`` for 4-7; ``mn[blk]``."""
        pair_type = ir.VectorType(F32, 2)
        pair = b.load(b.bitcast(b.gep(sc, [b.mul(blk, i64(2))]), pair_type.as_pointer()), align=4)
        lanes = b.shuffle_vector(pair, pair, mask([0, 0, 0, 0, 1, 1, 1, 1]))
        return lanes, None if cls.signed else b.load(b.gep(mn, [blk]))


class _SimpleFormat(Int8Format):
    """32-value blocks: an f16 scale ``d``, an f16 min (``has_min``; else min = ``offset * d``),
    the fifth bits of the 32 values as a uint32 (``fifth_bit``), then 16 bytes of nibbles."""

    has_min: ClassVar[bool] = False  # an f16 min follows d
    offset: ClassVar[float] = 0.0  # else the quants' offset: min = offset * d
    fifth_bit: ClassVar[bool] = False

    @classmethod
    def quants(cls, b, row, blk, isa):
        o, _ = cls.block_offset(b, blk)
        header = b.add(o, i64(2 + 2 * cls.has_min))
        nibbles = _nibbles(b, row, b.add(header, i64(4 * cls.fifth_bit)))
        return b.or_(nibbles, _fifth_bits(b, row, header)) if cls.fifth_bit else nibbles

    @classmethod
    def scales(cls, b, row, blk, sc, mn):
        o, _ = cls.block_offset(b, blk)
        if cls.has_min:  # d and m side by side: one load, one conversion for both (~20% faster)
            pair = b.fpext(load_scalar(b, row, o, ir.VectorType(ir.HalfType(), 2)), ir.VectorType(F32, 2))
            d, m = b.extract_element(pair, I32(0)), b.extract_element(pair, I32(1))
            return broadcast(b, d, V8F32), m
        d = _half(b, row, o)
        if cls.signed:
            return broadcast(b, d, V8F32), None
        return broadcast(b, d, V8F32), b.fmul(d, F32(cls.offset))


def _half(b, row, offset):
    return b.fpext(load_scalar(b, row, offset, ir.HalfType()), F32)


def _nibbles(b, row, offset):
    """16 bytes of nibbles as 32 uint8: the low nibbles, then the high ones (ggml's order)."""
    packed = load_vector(b, row, offset, V16I8)
    return join16(b, b.and_(packed, splat(V16I8, 15)), b.lshr(packed, splat(V16I8, 4)))


def _fifth_bits(b, row, offset):
    """The uint32 at ``offset`` as 32 bytes, byte j 16 when bit j is set, else 0 (Q5_0/Q5_1)."""
    word = b.bitcast(load_scalar(b, row, offset, I32), ir.VectorType(I8, 4))
    spread = b.shuffle_vector(word, word, mask([j // 8 for j in range(32)]))
    bits = ir.Constant(V32I8, [1 << (j % 8) for j in range(32)])
    is_set = b.icmp_unsigned("==", b.and_(spread, bits), bits)  # vpcmpeqb: 0xFF where set
    return b.and_(b.sext(is_set, V32I8), splat(V32I8, 16))


def _shifted_low_bits(b, bytes32, shift, bits):
    """``(bytes32 >> shift) & (2**bits - 1)`` lane-wise, ``shift`` an i64 run-time value."""
    amount = broadcast(b, b.trunc(shift, I8), V32I8)
    return b.and_(b.lshr(bytes32, amount), splat(V32I8, (1 << bits) - 1))


class Q4_0(_SimpleFormat):
    ggml = GGMLType.Q4_0
    offset = -8.0


class Q4_1(_SimpleFormat):
    ggml = GGMLType.Q4_1
    has_min = True


class Q5_0(_SimpleFormat):
    ggml = GGMLType.Q5_0
    offset = -16.0
    fifth_bit = True


class Q5_1(_SimpleFormat):
    ggml = GGMLType.Q5_1
    has_min = True
    fifth_bit = True


class Q8_0(_SimpleFormat):
    """d, then 32 int8 quants."""

    ggml = GGMLType.Q8_0
    signed = True

    @classmethod
    def quants(cls, b, row, blk, isa):
        o, _ = cls.block_offset(b, blk)
        return load_vector(b, row, b.add(o, i64(2)), V32I8)


def _iq4_levels(b, nibbles, isa):
    """IQ4_NL's 16 non-linear levels (gguf's table) for 32 nibbles: one ``vpshufb`` on AVX2."""
    levels = [int(v) for v in IQ4_NL_LEVELS]
    if isa == "avx2":
        lookup = function(b.module, "llvm.x86.avx2.pshuf.b", V32I8, [V32I8, V32I8])
        return b.call(lookup, [ir.Constant(V32I8, levels * 2), nibbles])
    out = ir.Constant(V32I8, [0] * 32)  # any other CPU: one value at a time
    table = ir.Constant(ir.VectorType(I8, 16), levels)
    for lane in range(32):
        index = b.extract_element(nibbles, I32(lane))
        out = b.insert_element(out, b.extract_element(table, index), I32(lane))
    return out


class IQ4_NL(_SimpleFormat):
    """Q4_0's layout, its nibbles indexing 16 levels."""

    ggml = GGMLType.IQ4_NL
    signed = True

    @classmethod
    def quants(cls, b, row, blk, isa):
        return _iq4_levels(b, super().quants(b, row, blk, isa), isa)


class IQ4_XS(Int8Format):
    """IQ4_NL's levels in 256-value blocks: sub-block j's nibbles at 8 + 16j, 6-bit scales."""

    ggml = GGMLType.IQ4_XS
    signed = True

    @classmethod
    def quants(cls, b, row, blk, isa):
        o, j = cls.block_offset(b, blk)
        return _iq4_levels(b, _nibbles(b, row, b.add(o, b.add(i64(8), b.mul(j, i64(16))))), isa)


class Q4_K(Int8Format):
    """Sub-blocks 2c and 2c+1 are the low and high nibbles of the 32 bytes at 16 + 32c."""

    ggml = GGMLType.Q4_K

    @classmethod
    def quants(cls, b, row, blk, isa):
        o, j = cls.block_offset(b, blk)
        packed = load_vector(b, row, b.add(o, b.add(i64(16), b.mul(b.lshr(j, i64(1)), i64(32)))), V32I8)
        return _shifted_low_bits(b, packed, b.mul(b.and_(j, i64(1)), i64(4)), 4)


class Q5_K(Int8Format):
    """Q4_K's nibbles (at 48 + 32c) plus bit j of the 32 bytes at 16 as the fifth bit."""

    ggml = GGMLType.Q5_K

    @classmethod
    def quants(cls, b, row, blk, isa):
        o, j = cls.block_offset(b, blk)
        packed = load_vector(b, row, b.add(o, b.add(i64(48), b.mul(b.lshr(j, i64(1)), i64(32)))), V32I8)
        low = _shifted_low_bits(b, packed, b.mul(b.and_(j, i64(1)), i64(4)), 4)
        high = _shifted_low_bits(b, load_vector(b, row, b.add(o, i64(16)), V32I8), j, 1)
        return b.or_(low, b.shl(high, splat(V32I8, 4)))


class Q6_K(Int8Format):
    """Per 128 values (half h): a nibble of ``ql`` plus 2 bits of ``qh``, minus 32.

    Block g of the half takes ``ql[64h + 32(g & 1):][:32]`` shifted by 4(g >> 1), and
    ``qh[32h:][:32]`` shifted by 2g.
    """

    ggml = GGMLType.Q6_K
    signed = True
    two_scales = True

    @classmethod
    def quants(cls, b, row, blk, isa):
        o, j = cls.block_offset(b, blk)
        h, g = b.lshr(j, i64(2)), b.and_(j, i64(3))
        ql_at = b.add(o, b.add(b.mul(h, i64(64)), b.mul(b.and_(g, i64(1)), i64(32))))
        low = _shifted_low_bits(b, load_vector(b, row, ql_at, V32I8), b.mul(b.lshr(g, i64(1)), i64(4)), 4)
        qh_at = b.add(o, b.add(i64(128), b.mul(h, i64(32))))
        high = _shifted_low_bits(b, load_vector(b, row, qh_at, V32I8), b.mul(g, i64(2)), 2)
        return b.sub(b.or_(low, b.shl(high, splat(V32I8, 4))), splat(V32I8, 32))


Q4_K_CODE, Q5_K_CODE, Q6_K_CODE = int(GGMLType.Q4_K), int(GGMLType.Q5_K), int(GGMLType.Q6_K)
IQ4_XS_CODE = int(GGMLType.IQ4_XS)


@njit(**JIT)
def _k_scales(src, nb, sc, mn, block_bytes):
    """Q4_K / Q5_K: ``d * scale`` and ``-dmin * min`` of each 6-bit pair."""
    for blk in range(nb):
        o = (blk >> 3) * block_bytes
        d = half_at(src, o)
        dmin = half_at(src, o + 2)
        s, m = k_scale_min(src, o + 4, blk & 7)
        sc[2 * blk] = d * np.float32(s)
        sc[2 * blk + 1] = d * np.float32(s)
        mn[blk] = -dmin * np.float32(m)


@njit(**JIT)
def _q6_k_scales(src, nb, sc):
    """Q6_K: ``d * scale`` per 16 values, int8 scales at 192, f16 d at 208."""
    for blk in range(nb):
        o = (blk >> 3) * 210
        d = half_at(src, o + 208)
        j = blk & 7
        at = o + 192 + 8 * (j >> 2) + 2 * (j & 3)
        sc[2 * blk] = d * np.float32(np.int8(src[at]))
        sc[2 * blk + 1] = d * np.float32(np.int8(src[at + 1]))


@njit(**JIT)
def _iq4_xs_scales(src, nb, sc):
    """IQ4_XS: ``d * (ls - 32)``, ``ls`` 4 low bits at 4 + j/2 and 2 high bits of the u16 at 2."""
    for blk in range(nb):
        o = (blk >> 3) * 136
        j = blk & 7
        d = half_at(src, o)
        low = (np.int32(src[o + 4 + (j >> 1)]) >> (4 * (j & 1))) & 0xF
        high = ((np.int32(src[o + 2]) | (np.int32(src[o + 3]) << 8)) >> (2 * j)) & 3
        scale = d * np.float32((low | (high << 4)) - 32)
        sc[2 * blk] = scale
        sc[2 * blk + 1] = scale


@njit(**JIT)
def has_row_scales(code):
    """Whether `row_scales` has work for this type (else the matmul skips it, and the row slices)."""
    return code in (Q4_K_CODE, Q5_K_CODE, Q6_K_CODE, IQ4_XS_CODE)


@njit(**JIT)
def row_scales(code, src, nb, sc, mn):
    """The K-quants' and IQ4_XS's block scales (two per 32 values) and mins of a row into ``sc``/``mn``.

    The other formats' scales are read by their IR (`_SimpleFormat.scales`): nothing to do.
    """
    if code == Q4_K_CODE:
        _k_scales(src, nb, sc, mn, 144)
    elif code == Q5_K_CODE:
        _k_scales(src, nb, sc, mn, 176)
    elif code == Q6_K_CODE:
        _q6_k_scales(src, nb, sc)
    elif code == IQ4_XS_CODE:
        _iq4_xs_scales(src, nb, sc)
