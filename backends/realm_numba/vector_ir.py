"""LLVM vector IR for the integer dot products, written out because numba's vectorizer won't.

numba's auto-vectorizer turns no loop shape into an integer kernel of llama.cpp's kind
(per-block integer multiply-adds, a float FMA into vector lanes, one horizontal sum per
row; docs/numba.md, "Integer dot products"). So the matmul's inner loop is emitted here as
LLVM IR with llvmlite and reaches numba through ``@intrinsic`` (dot_ir.py), which keeps
it in numba's on-disk cache like any kernel.

Two instruction sets give the same bits: ``"avx2"`` uses x86's ``vpmaddwd``, and
``"generic"`` widens to 32-bit lanes, for any other CPU. Integer sums are exact and a
lane's sum converts to float32 exactly (|w| <= 128, |x| <= 32767: four products are
below 2**24), and every float operation is an explicit IR instruction in a fixed order, so
both give the same result. That holds only inside numba functions compiled without
fast-math: numba puts fast-math flags on every float instruction of such a function's
module, these included (see gemm_q16.EXACT).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, config

I8, I16, I32, I64 = (ir.IntType(n) for n in (8, 16, 32, 64))
F32 = ir.FloatType()
V16I8 = ir.VectorType(I8, 16)
V32I8 = ir.VectorType(I8, 32)
V16I16 = ir.VectorType(I16, 16)
V32I16 = ir.VectorType(I16, 32)
V8I32 = ir.VectorType(I32, 8)
V8F32 = ir.VectorType(F32, 8)
P8 = I8.as_pointer()
PF = F32.as_pointer()


def host_isa() -> str:
    """``"avx2"`` where numba compiles for a CPU with AVX2, else ``"generic"``."""
    import llvmlite.binding as llvm

    features = config.CPU_FEATURES
    if features is None:
        return "avx2" if llvm.get_host_cpu_features().get("avx2", False) else "generic"
    return "avx2" if "+avx2" in features.split(",") else "generic"


def i64(value: int):
    return ir.Constant(I64, value)


def splat(vt: ir.VectorType, value):
    return ir.Constant(vt, [value] * vt.count)


def mask(indices: list[int]):
    return ir.Constant(ir.VectorType(I32, len(indices)), indices)


def load_vector(b: ir.IRBuilder, base, offset, vt: ir.VectorType):
    """The ``vt`` at byte ``offset`` from ``base`` (an ``i8*``), any alignment."""
    return b.load(b.bitcast(b.gep(base, [offset]), vt.as_pointer()), align=1)


def load_scalar(b: ir.IRBuilder, base, offset, ty):
    """The ``ty`` at byte ``offset`` from ``base`` (an ``i8*``), any alignment."""
    return b.load(b.bitcast(b.gep(base, [offset]), ty.as_pointer()), align=1)


def broadcast(b: ir.IRBuilder, value, vt: ir.VectorType):
    undef = ir.Constant(vt, None)
    return b.shuffle_vector(b.insert_element(undef, value, I32(0)), undef, mask([0] * vt.count))


def join16(b: ir.IRBuilder, low, high):
    """Two ``<16 x i8>`` as one ``<32 x i8>``, ``low`` first."""
    return b.shuffle_vector(low, high, mask(list(range(32))))


def function(module: ir.Module, name: str, ret, args: list):
    return cgutils.get_or_insert_function(module, ir.FunctionType(ret, args), name)


def fma(b: ir.IRBuilder, x, y, z):
    """``x * y + z`` with one rounding (``llvm.fma``), on float32 scalars or 8-lane vectors."""
    ty = x.type
    name = "llvm.fma.v8f32" if isinstance(ty, ir.VectorType) else "llvm.fma.f32"
    return b.call(function(b.module, name, ty, [ty, ty, ty]), [x, y, z])


def horizontal_sum(b: ir.IRBuilder, v):
    """The sum of 8 float lanes in a fixed order: lanes (i, i+4), then pairs, then the two."""
    quad = b.fadd(b.shuffle_vector(v, v, mask([0, 1, 2, 3])), b.shuffle_vector(v, v, mask([4, 5, 6, 7])))
    pair = b.fadd(b.shuffle_vector(quad, quad, mask([0, 1])), b.shuffle_vector(quad, quad, mask([2, 3])))
    return b.fadd(b.extract_element(pair, I32(0)), b.extract_element(pair, I32(1)))


def _sum_adjacent(b: ir.IRBuilder, v, lanes: int):
    """Lane i of the result is lanes 2i and 2i+1 of ``v`` added."""
    even = b.shuffle_vector(v, v, mask(list(range(0, 2 * lanes, 2))))
    odd = b.shuffle_vector(v, v, mask(list(range(1, 2 * lanes, 2))))
    return b.add(even, odd)


def widen(b: ir.IRBuilder, w, signed: bool):
    """Block quants ``w`` (32 x int8, or uint8 when not ``signed``) as 32 x int16, in order.

    In order, not permuted: a lane-crossing shuffle here (to put values 0-15 in the lanes
    a per-16 scale multiplies) cost half the inner loop's time; `dot32` folds its lanes
    instead, and only for the format that needs it (Q6_K).
    """
    return b.sext(w, V32I16) if signed else b.zext(w, V32I16)


def dot32(b: ir.IRBuilder, wide, x, isa: str, two_scales: bool = False):
    """Eight int32 lanes from two blocks of 32 x int16 (weights `widen`ed, and a token's values).

    Each ``vpmaddwd`` half gives lane ``j`` = products ``2j, 2j+1`` of its 16 values. One
    scale per block: the halves are added (lane ``j`` also holds products ``16+2j, 17+2j``).
    ``two_scales`` (one scale per 16 values): lanes 0-3 hold values 0-15 and lanes 4-7 values
    16-31 (lane ``j`` of a half plus lane ``j+4``), so a scale per 16 values applies lane-wise.
    Integer sums are exact: the generic form gives the same lanes, so the same bits.
    """
    halves = (range(0, 16), range(16, 32))
    if isa == "avx2":
        madd = function(b.module, "llvm.x86.avx2.pmadd.wd", V8I32, [V16I16, V16I16])
        parts = [
            b.call(madd, [b.shuffle_vector(wide, wide, mask(list(h))), b.shuffle_vector(x, x, mask(list(h)))])
            for h in halves
        ]
    else:
        v32i32 = ir.VectorType(I32, 32)
        products = b.mul(b.sext(wide, v32i32), b.sext(x, v32i32))
        parts = [_sum_adjacent(b, b.shuffle_vector(products, products, mask(list(h))), 8) for h in halves]
    if not two_scales:
        return b.add(parts[0], parts[1])
    low = b.shuffle_vector(parts[0], parts[1], mask([0, 1, 2, 3, 8, 9, 10, 11]))
    high = b.shuffle_vector(parts[0], parts[1], mask([4, 5, 6, 7, 12, 13, 14, 15]))
    return b.add(low, high)
