"""Activations rounded to 16-bit blocks (`gemm_q16.quantize_rows`), as LLVM vector IR.

Per block of 32 float32 values, exactly what `realm.quants.activations.quantize_q16`
defines: ``d = max|x| / 32767`` (NaN when the block holds a NaN), ``q = rint(x / d)``
clamped to +-32767 where ``d`` is finite and not zero (else 0), and ``xs = d * sum(q)``.
numba's loops for it stayed scalar (the NaN-aware max and the clamp kept LLVM's vectorizer
off, ~1.3 ns a value: 16 us for 8 tokens of 1536 values, per matmul); here each step is
one 8-lane instruction. ``max|x|`` is taken on the bits (the sign cleared): non-negative
floats order as their bits do, and a NaN's bits lie above infinity's, so one integer max
finds both. Every float operation is the reference's, in IEEE arithmetic (no fast-math
flags; the callers compile without fast-math): division, ``rint`` (ties to even), the
clamp, so the bits are the reference's.
"""

from __future__ import annotations

from llvmlite import ir
from numba.extending import intrinsic

from realm.quants.activations import Q16_MAX
from realm_numba.dot_ir import BlockLoop, new_function, void_call
from realm_numba.vector_ir import (
    F32,
    I32,
    I64,
    P8,
    PF,
    V8F32,
    V8I32,
    broadcast,
    function,
    i64,
    load_vector,
    mask,
    splat,
)

V8I16 = ir.VectorType(ir.IntType(16), 8)
SIGN_OFF = 0x7FFFFFFF
INF_BITS = 0x7F800000  # a |x| whose bits are above this is a NaN
Q_MAX = float(Q16_MAX)


def _umax(b, x, y):
    return b.select(b.icmp_unsigned(">", x, y), x, y)


def _across_lanes(b, v, combine):
    """Eight int32 lanes folded into one by ``combine(b, x, y)`` (a max or a sum: exact in any order)."""
    for half in (4, 2, 1):
        v = combine(b, v, b.shuffle_vector(v, v, mask(list(range(half, 2 * half)) + list(range(8 - half)))))
    return b.extract_element(v, I32(0))


def _quantize_function(module: ir.Module) -> ir.Function:
    """``(x, n_blocks, xq, xd, xs)``: ``n_blocks`` consecutive blocks of 32 values."""
    fn, new = new_function(module, "realm_quantize_q16", [PF, I64, P8, PF, PF])
    if not new:
        return fn
    x, n_blocks, xq, xd, xs = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    loop = BlockLoop(fn, b, n_blocks, [])
    first = b.mul(loop.blk, i64(32))
    raw = b.bitcast(x, P8)
    values = [load_vector(b, raw, b.mul(b.add(first, i64(8 * i)), i64(4)), V8F32) for i in range(4)]
    bits = [b.and_(b.bitcast(v, V8I32), splat(V8I32, SIGN_OFF)) for v in values]
    top = _across_lanes(b, _umax(b, _umax(b, bits[0], bits[1]), _umax(b, bits[2], bits[3])), _umax)
    scaled = b.fdiv(b.bitcast(top, F32), ir.Constant(F32, Q_MAX))
    d = b.select(b.icmp_unsigned(">", top, I32(INF_BITS)), ir.Constant(F32, float("nan")), scaled)
    positive = b.fcmp_ordered(">", d, ir.Constant(F32, 0.0))
    usable = b.and_(positive, b.fcmp_ordered("<", d, ir.Constant(F32, float("inf"))))  # so not NaN
    divisors = broadcast(b, b.select(usable, d, ir.Constant(F32, 1.0)), V8F32)
    rint = function(b.module, "llvm.rint.v8f32", V8F32, [V8F32])
    low, high = splat(V8F32, -Q_MAX), splat(V8F32, Q_MAX)
    total = splat(V8I32, 0)
    for i, v in enumerate(values):
        r = b.call(rint, [b.fdiv(v, divisors)])
        r = b.select(b.fcmp_ordered("<", r, low), low, r)
        r = b.select(b.fcmp_ordered(">", r, high), high, r)
        q = b.select(usable, b.fptosi(r, V8I32), splat(V8I32, 0))
        total = b.add(total, q)
        at = b.bitcast(b.gep(xq, [b.mul(b.add(first, i64(8 * i)), i64(2))]), V8I16.as_pointer())
        b.store(b.trunc(q, V8I16), at, align=2)
    b.store(d, b.gep(xd, [loop.blk]))
    b.store(b.fmul(d, b.sitofp(_across_lanes(b, total, ir.IRBuilder.add), F32)), b.gep(xs, [loop.blk]))
    loop.close([])
    b.ret_void()
    return fn


@intrinsic
def quantize_blocks(typingctx, x, x_at, n_blocks, xq, xq_at, xd, xd_at, xs, xs_at):
    """``quantize_blocks(x, x_at, n_blocks, xq, xq_at, xd, xd_at, xs, xs_at)``: ``n_blocks``
    consecutive 32-value blocks from element ``x_at`` of ``x`` (C-contiguous)."""
    return void_call(_quantize_function, x, x_at, n_blocks, xq, xq_at, xd, xd_at, xs, xs_at)
