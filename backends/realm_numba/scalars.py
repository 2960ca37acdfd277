"""Scalar helpers the block decoders share: bit casts and the small float formats.

numba has no float16 on the CPU and no scalar bit cast, so both are built here:
``u32_as_f32`` is an LLVM bitcast (free), and the half-float decoders reproduce
numpy's conversions bit for bit, NaN payloads included.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Every kernel in this package compiles with these options. ``cache=True`` keeps the
# machine code on disk so a fresh process does not recompile; ``error_model="numpy"``
# lets x / 0 be inf as in numpy instead of a Python exception check that blocks
# vectorization.
JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
JIT_FAST = {**JIT, "fastmath": True}
JIT_PARALLEL = {**JIT_FAST, "parallel": True}


@intrinsic
def u32_as_f32(typingctx, bits):
    """Reinterpret the 32 bits of an integer as a float32 (C's memcpy cast)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        (value,) = args
        as_u32 = builder.trunc(value, ir.IntType(32)) if bits.bitwidth > 32 else (
            builder.zext(value, ir.IntType(32)) if bits.bitwidth < 32 else value)
        return builder.bitcast(as_u32, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def u64_as_f64(typingctx, bits):
    """Reinterpret the 64 bits of an integer as a float64."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def prefetch(typingctx, address):
    """Ask the CPU to bring the cache line at ``address`` (an integer) into its caches.

    Never faults, whatever the address: a hint (``prefetcht0``).
    """
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        p8 = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [p8, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        pointer = builder.inttoptr(args[0], p8)
        builder.call(fn, [pointer, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(address), codegen


@intrinsic
def half_to_f32(typingctx, bits):
    """The IEEE half whose 16 bits are ``bits``, widened to float32 by the CPU (F16C).

    Vectorizes to ``vcvtph2ps``; used by the matmul kernels. NaN payloads may be
    quieted, so the exact decoders use ``f16_bits_to_f32`` instead.
    """
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        (value,) = args
        i16 = ir.IntType(16)
        as_i16 = builder.trunc(value, i16) if bits.bitwidth > 16 else (
            builder.zext(value, i16) if bits.bitwidth < 16 else value)
        return builder.fpext(builder.bitcast(as_i16, ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@njit(**JIT)
def half_at(src, o):
    """The half float at ``src[o:o+2]`` through the CPU's conversion (fast path)."""
    return half_to_f32(np.uint16(src[o]) | (np.uint16(src[o + 1]) << np.uint16(8)))


@njit(**JIT)
def f16_bits_to_f32(h):
    """IEEE half (given as its 16 bits) to float32, exactly as numpy's ``astype``."""
    h = np.uint32(h) & np.uint32(0xFFFF)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    exp = h & np.uint32(0x7C00)
    mant = h & np.uint32(0x03FF)
    if exp == np.uint32(0x7C00):  # inf / NaN keep their payload
        return u32_as_f32(sign | np.uint32(0x7F800000) | (mant << np.uint32(13)))
    if exp != 0:
        return u32_as_f32(sign | ((h & np.uint32(0x7FFF)) + np.uint32(0x1C000)) << np.uint32(13))
    # zero and subnormals: mant * 2**-24 is exact in float32
    value = np.float32(mant) * np.float32(5.9604644775390625e-08)
    return -value if sign else value


@njit(**JIT)
def f16_at(src, o):
    """The little-endian half float stored at ``src[o:o+2]``, as float32."""
    return f16_bits_to_f32(np.uint32(src[o]) | (np.uint32(src[o + 1]) << np.uint32(8)))


@njit(**JIT)
def u16_at(src, o):
    """The little-endian uint16 at ``src[o:o+2]``."""
    return np.uint32(src[o]) | (np.uint32(src[o + 1]) << np.uint32(8))


@njit(**JIT)
def u32_at(src, o):
    """The little-endian uint32 at ``src[o:o+4]``."""
    return (np.uint32(src[o]) | (np.uint32(src[o + 1]) << np.uint32(8))
            | (np.uint32(src[o + 2]) << np.uint32(16)) | (np.uint32(src[o + 3]) << np.uint32(24)))


@njit(**JIT)
def e8m0_half_to_f32(e):
    """An E8M0 shared exponent, halved (ggml_e8m0_to_fp32_half)."""
    e = np.uint32(e)
    if e < 2:
        return u32_as_f32(np.uint32(0x00200000) << e)
    return u32_as_f32((e - np.uint32(1)) << np.uint32(23))


@njit(**JIT)
def ue4m3_half_to_f32(x):
    """An unsigned E4M3 scale (bias 7), halved, as gguf's NVFP4 decoder computes it."""
    x = np.int32(x)
    if x == 0 or x == 0x7F:
        return np.float32(0.0)
    exp = (x >> 3) & 0xF
    man = np.float32(x & 0x7)
    if exp == 0:
        raw = man * np.float32(2.0**-9)
    else:
        raw = (np.float32(1.0) + man / np.float32(8.0)) * np.float32(2.0 ** (exp - 7))
    return raw * np.float32(0.5)


# Cephes' single-precision exp: exp(x) = 2**n * p(r), |r| <= ln(2)/2, p a degree-7
# polynomial; about 1 ulp. Written out (rather than np.exp, a libm call per element)
# so that loops over it vectorize. ln(2) is split in two so n * ln(2) is exact enough.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
# Inputs are clamped here: exp(88.0) is finite and exp(-87.0) is the smallest normal,
# which keeps every intermediate finite (the kernels may run with "no inf" fast-math).
_EXP_MAX = np.float32(88.0)
_EXP_MIN = np.float32(-87.0)


@njit(**JIT)
def exp_f32(x):
    """``exp(x)`` in float32 for ``x`` clamped to [-87, 88]; vectorizable, ~1 ulp."""
    x = min(max(x, _EXP_MIN), _EXP_MAX)
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * u32_as_f32(np.uint32(np.uint32(np.int32(n) + 127) << np.uint32(23)))
