"""Each weight format's part in the integer matmul: its quants and its scales, as LLVM IR.

A format is one class, registered by subclassing `Int8Format` (``__init_subclass__``),
a `formats.Format` that also holds the type's float decoders (formats.py) and its block
size, taken from gguf's type table. The matmul (dot_ir.py) walks a weight
row one GGML block at a time (32 values, or a 256-value super-block of eight 32-value
blocks) and needs two things per format:

- ``scales(b, row, o, isa)``: IR giving the GGML block at byte ``o``'s scales, as vectors: one
  float per 32-value block (two, one per 16 values, for ``two_scales``) and, for unsigned
  formats, one min per 32-value block (None for signed ones). A super-block's packed 6-bit
  scales are unpacked once for its eight blocks, in a dozen vector instructions;
- ``quants(b, row, o, j, isa)``: IR giving the block's 32-value block ``j`` (a constant) as
  ``<32 x i8>``, unsigned (``signed = False``: Q4_1, Q5_1 and the K-quants with a min) or
  signed (Q8_0, Q6_K, Q4_0 and Q5_0 with their offset taken off, and IQ4_NL / IQ4_XS,
  whose nibbles index gguf's 16 levels).

Layouts are ggml's (ggml/src/ggml-common.h); `realm.quants` holds the exact decoders. The
scales are the decoders' own products (``d * scale``, ``-dmin * min``).
"""

from __future__ import annotations

from typing import ClassVar

import llvmlite.binding as llvm
from gguf.quants import IQ4_NL as _GGUF_IQ4_NL
from llvmlite import ir

from realm.gguf.types import GGMLType
from realm_numba import decode_kquants as kq
from realm_numba import decode_simple as sq
from realm_numba import matvec as mv
from realm_numba.formats import Format
from realm_numba.vector_ir import (
    F32,
    I8,
    I16,
    I32,
    V16I8,
    V32I8,
    V32I16,
    broadcast,
    function,
    join16,
    load_scalar,
    load_vector,
    mask,
    splat,
    widen,
)

FORMATS: dict[int, type[Int8Format]] = {}  # the formats the integer matmul runs (formats.FORMATS: all)
llvm.initialize_native_asmparser()  # for `_half`'s inline asm (numba initializes only the printer)
IQ4_NL_LEVELS = _GGUF_IQ4_NL.kvalues  # IQ4_NL's and IQ4_XS's 16 levels, as gguf holds them


class Int8Format(Format):
    """One GGML type's quants and scales for `dot_ir`; subclasses register themselves."""

    signed: ClassVar[bool] = False  # quants are int8 (else uint8 with a per-block min)
    two_scales: ClassVar[bool] = False  # a scale per 16 values (else one per 32-value block)
    blocks: ClassVar[int]  # 32-value blocks per GGML block

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)  # registers it with formats.FORMATS
        if "ggml" in cls.__dict__:  # a format, not a family of them
            cls.blocks = cls.block_values // 32
            FORMATS[int(cls.ggml)] = cls

    @classmethod
    def quants(cls, b, row, o, j, isa):  # pragma: no cover - every registered format overrides it
        raise NotImplementedError

    @classmethod
    def scales(cls, b, row, o, isa):  # pragma: no cover - every registered format overrides it
        raise NotImplementedError

    @classmethod
    def wide_quants(cls, b, row, o, j, isa):
        """`quants` as the ``<32 x i16>`` that dot32 multiplies."""
        return widen(b, cls.quants(b, row, o, j, isa), cls.signed)


def _vector(b, *values):
    """Scalars of one type as one vector, in order."""
    out = ir.Constant(ir.VectorType(values[0].type, len(values)), None)
    for i, v in enumerate(values):
        out = b.insert_element(out, v, I32(i))
    return out


def _scaled(b, ints, d):
    """``d * float(ints)`` lane-wise: a vector of integers times a float32 scalar."""
    floats = ir.VectorType(F32, ints.type.count)
    return b.fmul(broadcast(b, d, floats), b.sitofp(ints, floats))


def _at(o, offset: int):
    return ir.Constant(o.type, offset)


def _halves(b, row, offset):
    """The two f16 at ``offset`` as float32, from one 4-byte load (``vmovd``)."""
    pair = b.fpext(load_scalar(b, row, offset, ir.VectorType(ir.HalfType(), 2)), ir.VectorType(F32, 2))
    return b.extract_element(pair, I32(0)), b.extract_element(pair, I32(1))


def _half(b, row, offset, isa):
    """The f16 at ``offset`` as float32.

    On x86 through a general register (``movzwl``, ``vmovd``): LLVM loads a lone f16 into a
    vector register that still holds another value (``vpinsrw``), and the conversion then
    waits for whatever last wrote that register, the row's accumulator: a dependency through
    every block that made the loop ~1.7x slower. ``vmovd`` from a general register writes
    the whole register; the asm keeps LLVM from turning it back into ``vpinsrw``.
    """
    if isa != "avx2":
        return b.fpext(load_scalar(b, row, offset, ir.HalfType()), F32)
    bits = b.zext(load_scalar(b, row, offset, I16), I32)
    v4i32 = ir.VectorType(I32, 4)
    moved = b.call(ir.InlineAsm(ir.FunctionType(v4i32, [I32]), "vmovd $1, $0", "=x,r"), [bits])
    halves = b.bitcast(moved, ir.VectorType(ir.HalfType(), 8))
    four = b.fpext(b.shuffle_vector(halves, halves, mask([0, 1, 2, 3])), ir.VectorType(F32, 4))
    return b.extract_element(four, I32(0))


def _nibbles(b, row, offset):
    """16 bytes of nibbles as 32 uint8: the low nibbles, then the high ones (ggml's order)."""
    packed = load_vector(b, row, offset, V16I8)
    return join16(b, b.and_(packed, splat(V16I8, 15)), b.lshr(packed, splat(V16I8, 4)))


def _fifth_bits(b, row, offset, unset: int, set_: int):
    """The uint32 at ``offset`` as 32 bytes: byte j ``set_`` where bit j is set, else ``unset``."""
    word = b.bitcast(load_scalar(b, row, offset, I32), ir.VectorType(I8, 4))
    spread = b.shuffle_vector(word, word, mask([j // 8 for j in range(32)]))
    bits = ir.Constant(V32I8, [1 << (j % 8) for j in range(32)])
    is_set = b.icmp_unsigned("==", b.and_(spread, bits), bits)  # vpcmpeqb: 0xFF where set
    return b.select(is_set, splat(V32I8, set_), splat(V32I8, unset))  # one vpand(n)


def _low_bits(b, bytes32, shift: int, bits: int):
    """``(bytes32 >> shift) & (2**bits - 1)`` lane-wise."""
    return b.and_(b.lshr(bytes32, splat(V32I8, shift)), splat(V32I8, (1 << bits) - 1))


class _SimpleFormat(Int8Format):
    """32-value blocks: an f16 scale ``d``, an f16 min (``has_min``; else the quants are offset
    by ``offset``), the fifth bits of the 32 values as a uint32 (``fifth_bit``), then 16
    bytes of nibbles."""

    has_min: ClassVar[bool] = False  # an f16 min follows d
    offset: ClassVar[int] = 0  # else the quants' offset, taken off in integers (signed quants)
    fifth_bit: ClassVar[bool] = False

    @classmethod
    def quants(cls, b, row, o, j, isa):
        header = b.add(o, _at(o, 2 + 2 * cls.has_min))
        quants = _nibbles(b, row, b.add(header, _at(o, 4 * cls.fifth_bit)))
        if not cls.fifth_bit:
            return quants
        if cls.offset:  # Q5_0, as ggml's AVX2 kernel: a nibble | 0xF0 is the nibble - 16 in int8
            return b.or_(quants, _fifth_bits(b, row, header, unset=0xF0, set_=0))
        return b.or_(quants, _fifth_bits(b, row, header, unset=0, set_=16))

    @classmethod
    def wide_quants(cls, b, row, o, j, isa):
        """With an offset, (q - offset) * x in integers, where a min (offset * d) costs a float
        multiply-add per block and row: Q5_0's quants come signed (`quants`), Q4_0's nibbles
        get a subtraction in 16-bit lanes (in bytes, before widening, it made LLVM cross the
        vector's halves twice more: ~25% slower)."""
        if not cls.offset or cls.fifth_bit:
            return super().wide_quants(b, row, o, j, isa)
        wide = widen(b, cls.quants(b, row, o, j, isa), False)  # the nibbles, unsigned
        return b.sub(wide, splat(V32I16, cls.offset))

    @classmethod
    def scales(cls, b, row, o, isa):
        if cls.has_min:  # d and m side by side
            d, m = _halves(b, row, o)
            return _vector(b, d), _vector(b, m)
        return _vector(b, _half(b, row, o, isa)), None


class Q4_0(_SimpleFormat):
    ggml = GGMLType.Q4_0
    offset = 8
    signed = True
    decode = staticmethod(sq.decode_q4_0)
    matmul_decode = staticmethod(mv.q4_0_row)
    lanes = 16


class Q4_1(_SimpleFormat):
    ggml = GGMLType.Q4_1
    has_min = True
    decode = staticmethod(sq.decode_q4_1)
    matmul_decode = staticmethod(mv.q4_1_row)
    lanes = 16


class Q5_0(_SimpleFormat):
    ggml = GGMLType.Q5_0
    offset = 16
    signed = True
    fifth_bit = True
    decode = staticmethod(sq.decode_q5_0)
    matmul_decode = staticmethod(mv.q5_0_row)
    lanes = 16


class Q5_1(_SimpleFormat):
    ggml = GGMLType.Q5_1
    has_min = True
    fifth_bit = True
    decode = staticmethod(sq.decode_q5_1)
    matmul_decode = staticmethod(mv.q5_1_row)
    lanes = 16


class Q8_0(_SimpleFormat):
    """d, then 32 int8 quants."""

    ggml = GGMLType.Q8_0
    signed = True
    decode = staticmethod(sq.decode_q8_0)
    matmul_decode = staticmethod(mv.q8_0_row)
    lanes = 32

    @classmethod
    def quants(cls, b, row, o, j, isa):
        return load_vector(b, row, b.add(o, _at(o, 2)), V32I8)


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
    decode = staticmethod(sq.decode_iq4_nl)

    @classmethod
    def quants(cls, b, row, o, j, isa):
        return _iq4_levels(b, super().quants(b, row, o, j, isa), isa)


class IQ4_XS(Int8Format):
    """IQ4_NL's levels in 256-value blocks: f16 d, the scales' 2 high bits (a u16), their 4 low
    bits (4 bytes), then block j's nibbles at 8 + 16j. Block j's scale is ``d * (ls - 32)``."""

    ggml = GGMLType.IQ4_XS
    signed = True
    decode = staticmethod(kq.decode_iq4_xs)

    @classmethod
    def quants(cls, b, row, o, j, isa):
        return _iq4_levels(b, _nibbles(b, row, b.add(o, _at(o, 8 + 16 * j))), isa)

    @classmethod
    def scales(cls, b, row, o, isa):
        v8i8, v8i16, v8i32 = (ir.VectorType(t, 8) for t in (I8, I16, I32))
        packed = load_scalar(b, row, b.add(o, _at(o, 4)), ir.VectorType(I8, 4))
        spread = b.shuffle_vector(packed, packed, mask([j // 2 for j in range(8)]))
        low = b.and_(b.lshr(spread, ir.Constant(v8i8, [4 * (j & 1) for j in range(8)])), splat(v8i8, 15))
        high_bits = broadcast(b, load_scalar(b, row, b.add(o, _at(o, 2)), I16), v8i16)
        high = b.and_(b.lshr(high_bits, ir.Constant(v8i16, [2 * j for j in range(8)])), splat(v8i16, 3))
        ls = b.or_(b.zext(low, v8i32), b.shl(b.zext(high, v8i32), splat(v8i32, 4)))
        return _scaled(b, b.sub(ls, splat(v8i32, 32)), _half(b, row, o, isa)), None


class _KQuant(Int8Format):
    """Q4_K / Q5_K: f16 d and dmin, then 12 bytes of eight 6-bit (scale, min) pairs."""

    @classmethod
    def scales(cls, b, row, o, isa):
        """``d * sc`` and ``-dmin * m``, the pairs unpacked a 32-bit word at a time (as ggml's
        AVX2 kernel does): words 0-1 give the scales' bytes, words 2-3 the mins'."""
        d, dmin = _halves(b, row, o)
        u0, u1, u2 = (load_scalar(b, row, b.add(o, _at(o, at)), I32) for at in (4, 8, 12))
        six, four, two = (I32(m) for m in (0x3F3F3F3F, 0x0F0F0F0F, 0x03030303))

        def top_bits(u):  # each byte's bits 6-7, as bits 4-5
            return b.shl(b.and_(b.lshr(u, I32(6)), two), I32(4))

        def as_floats(low, high, scale):
            v8i32 = ir.VectorType(I32, 8)
            return _scaled(b, b.zext(b.bitcast(_vector(b, low, high), ir.VectorType(I8, 8)), v8i32), scale)

        scales = as_floats(b.and_(u0, six), b.or_(b.and_(u2, four), top_bits(u0)), d)
        mins = as_floats(b.and_(u1, six), b.or_(b.and_(b.lshr(u2, I32(4)), four), top_bits(u1)), b.fneg(dmin))
        return scales, mins


class Q4_K(_KQuant):
    """Blocks 2c and 2c+1 are the low and high nibbles of the 32 bytes at 16 + 32c."""

    ggml = GGMLType.Q4_K
    decode = staticmethod(kq.decode_q4_k)
    matmul_decode = staticmethod(mv.q4_k_row)
    lanes = 32

    @classmethod
    def quants(cls, b, row, o, j, isa):
        packed = load_vector(b, row, b.add(o, _at(o, 16 + 32 * (j >> 1))), V32I8)
        return _low_bits(b, packed, 4 * (j & 1), 4)


class Q5_K(_KQuant):
    """Q4_K's nibbles (at 48 + 32c) plus bit j of the 32 bytes at 16 as the fifth bit."""

    ggml = GGMLType.Q5_K
    decode = staticmethod(kq.decode_q5_k)
    matmul_decode = staticmethod(mv.q5_k_row)
    lanes = 32

    @classmethod
    def quants(cls, b, row, o, j, isa):
        low = _low_bits(b, load_vector(b, row, b.add(o, _at(o, 48 + 32 * (j >> 1))), V32I8), 4 * (j & 1), 4)
        high = _low_bits(b, load_vector(b, row, b.add(o, _at(o, 16)), V32I8), j, 1)
        return b.or_(low, b.shl(high, splat(V32I8, 4)))


class Q6_K(Int8Format):
    """Per 128 values (half h): a nibble of ``ql`` plus 2 bits of ``qh``, minus 32; then 16
    int8 scales (one per 16 values) at 192 and f16 d at 208.

    Block g of the half takes ``ql[64h + 32(g & 1):][:32]`` shifted by 4(g >> 1), and
    ``qh[32h:][:32]`` shifted by 2g.
    """

    ggml = GGMLType.Q6_K
    signed = True
    two_scales = True
    decode = staticmethod(kq.decode_q6_k)
    matmul_decode = staticmethod(mv.q6_k_row)
    lanes = 16

    @classmethod
    def quants(cls, b, row, o, j, isa):
        h, g = j >> 2, j & 3
        ql = load_vector(b, row, b.add(o, _at(o, 64 * h + 32 * (g & 1))), V32I8)
        qh = load_vector(b, row, b.add(o, _at(o, 128 + 32 * h)), V32I8)
        high = b.shl(_low_bits(b, qh, 2 * g, 2), splat(V32I8, 4))
        return b.sub(b.or_(_low_bits(b, ql, 4 * (g >> 1), 4), high), splat(V32I8, 32))

    @classmethod
    def scales(cls, b, row, o, isa):
        ints = b.sext(load_vector(b, row, b.add(o, _at(o, 192)), V16I8), ir.VectorType(I32, 16))
        return _scaled(b, ints, _half(b, row, b.add(o, _at(o, 208)), isa)), None
