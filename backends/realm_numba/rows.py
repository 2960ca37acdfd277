"""Whole-row decoding for every GGML type, bit-identical to the reference, and the
kernels built on it: dequantize and get_rows. The matmul (gemm.py) decodes with it every
type that has no vectorized decoder in matvec.py.

A weight is a C-contiguous ``uint8 [rows, row_bytes]`` view of its raw blocks. The
type is passed as its integer GGML id and resolved once per row, not per block, so
one compiled kernel serves every type.
"""

from __future__ import annotations

from numba import njit, prange

from realm.gguf.types import TYPE_TRAITS, GGMLType
from realm_numba import decode_iquants as iq
from realm_numba import decode_kquants as kq
from realm_numba import decode_simple as sq
from realm_numba.scalars import JIT

# Type ids as plain ints: numba folds module-level ints into constants.
F32, F16, BF16, F64 = (int(GGMLType[n]) for n in ("F32", "F16", "BF16", "F64"))
I8, I16, I32, I64 = (int(GGMLType[n]) for n in ("I8", "I16", "I32", "I64"))
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = (int(GGMLType[n]) for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = (int(GGMLType[n]) for n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"))
IQ2_XXS, IQ2_XS, IQ2_S = int(GGMLType.IQ2_XXS), int(GGMLType.IQ2_XS), int(GGMLType.IQ2_S)
IQ3_XXS, IQ3_S = int(GGMLType.IQ3_XXS), int(GGMLType.IQ3_S)
IQ1_S, IQ1_M = int(GGMLType.IQ1_S), int(GGMLType.IQ1_M)
IQ4_NL, IQ4_XS = int(GGMLType.IQ4_NL), int(GGMLType.IQ4_XS)
TQ1_0, TQ2_0 = int(GGMLType.TQ1_0), int(GGMLType.TQ2_0)
MXFP4, NVFP4 = int(GGMLType.MXFP4), int(GGMLType.NVFP4)

# The types ``decode_row`` knows: those realm.quants' reference can dequantize.
DECODABLE = frozenset(GGMLType(t) for t in (
    F32, F16, BF16, F64, I8, I16, I32, I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, IQ4_NL, IQ4_XS,
    TQ1_0, TQ2_0, MXFP4, NVFP4,
))  # fmt: skip


def _ts(name: str) -> int:
    return TYPE_TRAITS[GGMLType[name]].type_size


# Block byte sizes, checked against the type table so a layout slip fails at import.
_TS = {n: _ts(n) for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                            "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S",
                            "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4",
                            "NVFP4")}  # fmt: skip
assert _TS == {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q2_K": 84,
               "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "IQ2_XXS": 66, "IQ2_XS": 74,
               "IQ2_S": 82, "IQ3_XXS": 98, "IQ3_S": 110, "IQ1_S": 50, "IQ1_M": 56, "IQ4_NL": 18,
               "IQ4_XS": 136, "TQ1_0": 54, "TQ2_0": 66, "MXFP4": 17, "NVFP4": 36}, _TS  # fmt: skip


@njit(**JIT)
def decode_row(code, src, dst):  # noqa: C901 - one branch per format, taken once per row
    """Decode one row of ``dst.shape[0]`` elements of type ``code`` from its bytes ``src``."""
    n = dst.shape[0]
    if code == F32:
        sq.decode_f32_row(src, dst)
    elif code == F16:
        sq.decode_f16_row(src, dst)
    elif code == BF16:
        sq.decode_bf16_row(src, dst)
    elif code == F64:
        sq.decode_f64_row(src, dst)
    elif code == I8:
        sq.decode_int_row(src, dst, 1)
    elif code == I16:
        sq.decode_int_row(src, dst, 2)
    elif code == I32:
        sq.decode_int_row(src, dst, 4)
    elif code == I64:
        sq.decode_int_row(src, dst, 8)
    elif code == Q4_0:
        for b in range(n // 32):
            sq.decode_q4_0(src, b * 18, dst, b * 32)
    elif code == Q4_1:
        for b in range(n // 32):
            sq.decode_q4_1(src, b * 20, dst, b * 32)
    elif code == Q5_0:
        for b in range(n // 32):
            sq.decode_q5_0(src, b * 22, dst, b * 32)
    elif code == Q5_1:
        for b in range(n // 32):
            sq.decode_q5_1(src, b * 24, dst, b * 32)
    elif code == Q8_0:
        for b in range(n // 32):
            sq.decode_q8_0(src, b * 34, dst, b * 32)
    elif code == IQ4_NL:
        for b in range(n // 32):
            sq.decode_iq4_nl(src, b * 18, dst, b * 32)
    elif code == MXFP4:
        for b in range(n // 32):
            sq.decode_mxfp4(src, b * 17, dst, b * 32)
    elif code == NVFP4:
        for b in range(n // 64):
            sq.decode_nvfp4(src, b * 36, dst, b * 64)
    elif code == Q2_K:
        for b in range(n // 256):
            kq.decode_q2_k(src, b * 84, dst, b * 256)
    elif code == Q3_K:
        for b in range(n // 256):
            kq.decode_q3_k(src, b * 110, dst, b * 256)
    elif code == Q4_K:
        for b in range(n // 256):
            kq.decode_q4_k(src, b * 144, dst, b * 256)
    elif code == Q5_K:
        for b in range(n // 256):
            kq.decode_q5_k(src, b * 176, dst, b * 256)
    elif code == Q6_K:
        for b in range(n // 256):
            kq.decode_q6_k(src, b * 210, dst, b * 256)
    elif code == IQ4_XS:
        for b in range(n // 256):
            kq.decode_iq4_xs(src, b * 136, dst, b * 256)
    elif code == TQ1_0:
        for b in range(n // 256):
            kq.decode_tq1_0(src, b * 54, dst, b * 256)
    elif code == TQ2_0:
        for b in range(n // 256):
            kq.decode_tq2_0(src, b * 66, dst, b * 256)
    elif code == IQ2_XXS:
        for b in range(n // 256):
            iq.decode_iq2_xxs(src, b * 66, dst, b * 256)
    elif code == IQ2_XS:
        for b in range(n // 256):
            iq.decode_iq2_xs(src, b * 74, dst, b * 256)
    elif code == IQ2_S:
        for b in range(n // 256):
            iq.decode_iq2_s(src, b * 82, dst, b * 256)
    elif code == IQ3_XXS:
        for b in range(n // 256):
            iq.decode_iq3_xxs(src, b * 98, dst, b * 256)
    elif code == IQ3_S:
        for b in range(n // 256):
            iq.decode_iq3_s(src, b * 110, dst, b * 256)
    elif code == IQ1_S:
        for b in range(n // 256):
            iq.decode_iq1_s(src, b * 50, dst, b * 256)
    elif code == IQ1_M:
        for b in range(n // 256):
            iq.decode_iq1_m(src, b * 56, dst, b * 256)


@njit(**JIT, parallel=True)
def dequantize_rows(code, w, out):
    """``out[r] = decode(w[r])`` for every row (exact: no fast-math here)."""
    for r in prange(w.shape[0]):
        decode_row(code, w[r], out[r])


@njit(**JIT)
def get_rows(code, w, ids, out):
    """``out[i] = decode(w[ids[i]])``; returns the position of the first id out of range, or -1."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= w.shape[0]:
            return i
    for i in range(ids.shape[0]):
        decode_row(code, w[ids[i]], out[i])
    return -1


@njit(**JIT)
def take_rows(w, ids, out):
    """``out[i] = w[ids[i]]`` for a float32 table; returns the first bad position, or -1."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= w.shape[0]:
            return i
    for i in range(ids.shape[0]):
        out[i] = w[ids[i]]
    return -1
