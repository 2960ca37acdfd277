"""The integer matmul's inner loops, as LLVM functions reached through numba ``@intrinsic``.

For one token, weight row ``r``'s result is

    sum over 32-value blocks b of  fma-accumulated  dot_b * (SC[r, b] * DX[b])   (8 lanes,
    two chains: see `_row_total`), then one horizontal sum, plus
    sum over b of  mn[r, b] * xs[b]                                             (scalar)

where ``dot_b`` is the integer dot product of the block's quants with the token's
16-bit values in eight int32 lanes (vector_ir.dot32), ``SC`` the block's scale per lane
(two per block: one per 16 values, equal unless the format has ``two_scales``), ``DX`` the
token's block scale and ``xs`` its scale times the sum of its quants (for the formats with
a min).

Two ways to get there, with the same instructions on the same values, so the same bits:

- ``dot_rows``: one row's quants unpacked from the weight bytes in registers, for each
  token (one or two tokens: no scratch memory to write and read again), rows one after
  another;
- ``unpack`` once per tile of up to four rows into a scratch of int16 quants, 8-lane
  scales and mins, then ``dot_tile`` for every token, two rows and two tokens at a time
  (many tokens: the unpacking is paid once).

Each row's accumulation is the same instruction sequence whatever rows and tokens share
the call, either way: that is what keeps the matmul batch-invariant (gemm_q16.py).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from realm_numba.int8_formats import FORMATS, Int8Format
from realm_numba.vector_ir import (
    F32,
    I32,
    I64,
    P8,
    PF,
    V8F32,
    V32I16,
    broadcast,
    dot32,
    fma,
    horizontal_sum,
    i64,
    load_vector,
    mask,
)

ZEROS = ir.Constant(V8F32, [0.0] * 8)
ZERO = ir.Constant(F32, 0.0)


def new_function(module: ir.Module, name: str, args: list) -> tuple[ir.Function, bool]:
    existing = module.globals.get(name)
    if existing is not None:
        return existing, False
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name)
    fn.linkage = "internal"
    return fn, True


class BlockLoop:
    """``for blk in range(nb)`` with loop-carried values; ``done`` sees their final values."""

    def __init__(self, fn: ir.Function, b: ir.IRBuilder, nb, initial: list):
        self.entry = b.block
        self.loop, self.done = fn.append_basic_block("loop"), fn.append_basic_block("done")
        self.b, self.nb, self.initial = b, nb, initial
        b.cbranch(b.icmp_signed(">", nb, i64(0)), self.loop, self.done)
        b.position_at_end(self.loop)
        self.blk = b.phi(I64)
        self.carried = [b.phi(v.type) for v in initial]

    def close(self, updated: list) -> list:
        b, end = self.b, self.b.block
        next_blk = b.add(self.blk, i64(1))
        self.blk.add_incoming(i64(0), self.entry)
        self.blk.add_incoming(next_blk, end)
        for phi, start, new in zip(self.carried, self.initial, updated, strict=True):
            phi.add_incoming(start, self.entry)
            phi.add_incoming(new, end)
        b.cbranch(b.icmp_signed("<", next_blk, self.nb), self.loop, self.done)
        b.position_at_end(self.done)
        finals = []
        for start, new in zip(self.initial, updated, strict=True):
            final = b.phi(start.type)
            final.add_incoming(start, self.entry)
            final.add_incoming(new, end)
            finals.append(final)
        return finals


# Each row's sums run as two chains, block ``blk`` into chain ``blk % 2``: one chain made
# every block wait for the previous block's FMA (its latency, not the work, set the pace).
# Each loop carries (this block's chain, the other) and swaps them after every block; the
# chains meet in `_row_total`, where the order cannot matter (a + b == b + a exactly).


def _row_total(b, lanes, lanes_other, mins, mins_other):
    """A row's result from its chains: lanes added, summed across (fixed order), plus the mins."""
    return b.fadd(horizontal_sum(b, b.fadd(lanes, lanes_other)), b.fadd(mins, mins_other))


def _accumulate(b, products, lane_scales, dx_lanes, acc):
    """One block into a row's lanes: ``fma(products, SC * DX, acc)``, the one formula both ways use.

    ``SC * DX`` depends only on loads, so it is ready early; the products' own chain (unpack,
    multiply-add, convert) then ends in the FMA alone.
    """
    return fma(b, b.sitofp(products, V8F32), b.fmul(lane_scales, dx_lanes), acc)


def _lane_scales(b, fmt: type[Int8Format], scales, j: int):
    """Block ``j``'s eight lane scales (dot32's layout) from its GGML block's ``scales``."""
    if fmt.two_scales:  # lanes 0-3: values 0-15, lanes 4-7: values 16-31
        return b.shuffle_vector(scales, scales, mask([2 * j] * 4 + [2 * j + 1] * 4))
    return b.shuffle_vector(scales, scales, mask([j] * 8))


def _ggml_blocks(fn: ir.Function, b: ir.IRBuilder, fmt: type[Int8Format], w, nb, isa: str, initial: list):
    """A loop over a row's GGML blocks (``nb`` 32-value blocks in all): the loop, the block's
    byte offset, its scales and mins (`Int8Format.scales`, once per GGML block), and the
    index of its first 32-value block."""
    loop = BlockLoop(fn, b, b.udiv(nb, i64(fmt.blocks)), initial)
    o = b.mul(loop.blk, i64(fmt.block_bytes))
    scales, mins = fmt.scales(b, w, o, isa)
    return loop, o, scales, mins, b.mul(loop.blk, i64(fmt.blocks))


# w, xq, xd, xs, nb, out
_INLINE_ARGS = [P8, P8, PF, PF, I64, PF]


def _inline_function(module: ir.Module, fmt: type[Int8Format], isa: str) -> ir.Function:
    """One weight row against one token, its quants unpacked in registers block by block."""
    fn, new = new_function(module, f"realm_int8_inline_{fmt.ggml.name.lower()}_{isa}", _INLINE_ARGS)
    if not new:
        return fn
    w, xq, xd, xs, nb, out = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    loop, o, scales, mins, first = _ggml_blocks(fn, b, fmt, w, nb, isa, [ZEROS, ZEROS, ZERO, ZERO])
    acc, acc_next, acc_min, min_next = loop.carried  # two chains each: see `_row_total`
    for j in range(fmt.blocks):
        blk = b.add(first, i64(j))
        x = load_vector(b, xq, b.mul(blk, i64(64)), V32I16)
        dx_lanes = broadcast(b, b.load(b.gep(xd, [blk])), V8F32)
        products = dot32(b, fmt.wide_quants(b, w, o, j, isa), x, isa, fmt.two_scales)
        acc, acc_next = acc_next, _accumulate(b, products, _lane_scales(b, fmt, scales, j), dx_lanes, acc)
        if mins is not None:
            block_min = fma(b, b.extract_element(mins, I32(j)), b.load(b.gep(xs, [blk])), acc_min)
            acc_min, min_next = min_next, block_min
    b.store(_row_total(b, *loop.close([acc, acc_next, acc_min, min_next])), out)
    b.ret_void()
    return fn


# w, row_bytes, rows, xq, xd, xs, nb, out, tokens, out_stride (floats from one token's outputs to the next)
_ROWS_ARGS = [P8, I64, I64, P8, PF, PF, I64, PF, I64, I64]


def _rows_function(module: ir.Module, fmt: type[Int8Format], isa: str) -> ir.Function:
    """``rows`` consecutive weight rows, one after another, each against ``tokens`` consecutive
    tokens (`_inline_function` for each row and token, inlined). The call, the format's
    dispatch and the loop setup are paid once per run of rows: once per row, they cost as
    much as a short row's 20 blocks."""
    fn, new = new_function(module, f"realm_int8_rows_{fmt.ggml.name.lower()}_{isa}", _ROWS_ARGS)
    if not new:
        return fn
    one_row = _inline_function(module, fmt, isa)
    one_row.attributes.add("alwaysinline")
    w, row_bytes, rows, xq, xd, xs, nb, out, tokens, out_stride = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    row = BlockLoop(fn, b, rows, [])
    token = BlockLoop(fn, b, tokens, [])
    blocks = b.mul(token.blk, nb)
    b.call(one_row, [
        b.gep(w, [b.mul(row.blk, row_bytes)]),
        b.gep(xq, [b.mul(blocks, i64(64))]),
        b.gep(xd, [blocks]),
        b.gep(xs, [blocks]),
        nb,
        b.gep(out, [b.add(b.mul(token.blk, out_stride), row.blk)]),
    ])  # fmt: skip
    token.close([])
    row.close([])
    b.ret_void()
    return fn


# w (one row), nb, q (nb x 32 int16), scv (nb x 8 float), mn (nb floats; unsigned formats)
_UNPACK_ARGS = [P8, I64, P8, PF, PF]


def _unpack_function(module: ir.Module, fmt: type[Int8Format], isa: str) -> ir.Function:
    """One row, block by block, into the scratch: its quants widened (vector_ir.widen), its
    lane scales and its mins, what `_unpacked_function` reads for every token."""
    fn, new = new_function(module, f"realm_int8_unpack_{fmt.ggml.name.lower()}_{isa}", _UNPACK_ARGS)
    if not new:
        return fn
    w, nb, q, scv, mn = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    loop, o, scales, mins, first = _ggml_blocks(fn, b, fmt, w, nb, isa, [])
    for j in range(fmt.blocks):
        blk = b.add(first, i64(j))
        quants = b.bitcast(b.gep(q, [b.mul(blk, i64(64))]), V32I16.as_pointer())
        b.store(fmt.wide_quants(b, w, o, j, isa), quants, align=2)
        lanes = b.bitcast(b.gep(scv, [b.mul(blk, i64(8))]), V8F32.as_pointer())
        b.store(_lane_scales(b, fmt, scales, j), lanes, align=4)
        if mins is not None:
            b.store(b.extract_element(mins, I32(j)), b.gep(mn, [blk]))
    loop.close([])
    b.ret_void()
    return fn


# w, row_bytes, rows, nb, q, scv, mn
_UNPACK_ROWS_ARGS = [P8, I64, I64, I64, P8, PF, PF]


def _unpack_rows_function(module: ir.Module, fmt: type[Int8Format], isa: str) -> ir.Function:
    """`_unpack_function` for ``rows`` consecutive rows in one call (see `_rows_function`)."""
    name = f"realm_int8_unpack_rows_{fmt.ggml.name.lower()}_{isa}"
    fn, new = new_function(module, name, _UNPACK_ROWS_ARGS)
    if not new:
        return fn
    one_row = _unpack_function(module, fmt, isa)
    one_row.attributes.add("alwaysinline")
    w, row_bytes, rows, nb, q, scv, mn = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    row = BlockLoop(fn, b, rows, [])
    r = row.blk
    b.call(one_row, [
        b.gep(w, [b.mul(r, row_bytes)]),
        nb,
        b.gep(q, [b.mul(b.mul(r, nb), i64(64))]),
        b.gep(scv, [b.mul(b.mul(r, nb), i64(8))]),
        b.gep(mn, [b.mul(r, nb)]),
    ])  # fmt: skip
    row.close([])
    b.ret_void()
    return fn


# q, scv, mn, xq, xd, xs, nb, out, x_stride (int16s), s_stride (scales), out_stride (floats):
# a tile unpacked by `unpack`, against TOKENS consecutive tokens.
_UNPACKED_ARGS = [P8, PF, PF, P8, PF, PF, I64, PF, I64, I64, I64]
TOKENS = 2  # tokens per pass: each row's quants and scales are loaded once for both


def unpacked_kind(fmt: type[Int8Format]) -> int:
    """What `dot_unpacked` must know of a format: its quants' sign and its scales per block."""
    return int(fmt.signed) + 2 * int(fmt.two_scales)


UNPACKED_KINDS = {0: (False, False), 1: (True, False), 3: (True, True)}  # (signed, two_scales)


def _unpacked_function(module: ir.Module, kind: int, rows: int, isa: str) -> ir.Function:
    signed, two_scales = UNPACKED_KINDS[kind]
    fn, new = new_function(module, f"realm_int8_unpacked_k{kind}_r{rows}_t{TOKENS}_{isa}", _UNPACKED_ARGS)
    if not new:
        return fn
    q, scv, mn, xq, xd, xs, nb, out, x_stride, s_stride, out_stride = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    q_rows = [b.gep(q, [b.mul(nb, i64(64 * r))]) for r in range(rows)]
    scv_rows = [b.gep(scv, [b.mul(nb, i64(8 * r))]) for r in range(rows)]
    x_tokens = [b.gep(xq, [b.mul(x_stride, i64(2 * t))]) for t in range(TOKENS)]
    xd_tokens = [b.gep(xd, [b.mul(s_stride, i64(t))]) for t in range(TOKENS)]
    loop = BlockLoop(fn, b, nb, [ZEROS] * (2 * rows * TOKENS))
    blk, carried = loop.blk, loop.carried  # (chain of this block, the other) per row and token
    xs_blk = [load_vector(b, x_tokens[t], b.mul(blk, i64(64)), V32I16) for t in range(TOKENS)]
    dx_lanes = [broadcast(b, b.load(b.gep(xd_tokens[t], [blk])), V8F32) for t in range(TOKENS)]
    lanes = []
    for r in range(rows):
        quants = load_vector(b, q_rows[r], b.mul(blk, i64(64)), V32I16)
        scales = b.load(b.bitcast(b.gep(scv_rows[r], [b.mul(blk, i64(8))]), V8F32.as_pointer()), align=4)
        for t in range(TOKENS):
            acc, acc_next = carried[2 * (r * TOKENS + t) : 2 * (r * TOKENS + t) + 2]
            products = dot32(b, quants, xs_blk[t], isa, two_scales)
            lanes += [acc_next, _accumulate(b, products, scales, dx_lanes[t], acc)]
    finals = loop.close(lanes)
    # The mins in a loop of their own (fewer live registers above), in the same order as
    # `_inline_function` adds them, so both give the same bits.
    mins = [ZERO] * (2 * rows * TOKENS)
    if not signed:
        mn_rows = [b.gep(mn, [b.mul(nb, i64(r))]) for r in range(rows)]
        xs_tokens = [b.gep(xs, [b.mul(s_stride, i64(t))]) for t in range(TOKENS)]
        min_loop = BlockLoop(fn, b, nb, mins)
        updated = []
        for r in range(rows):
            block_min = b.load(b.gep(mn_rows[r], [min_loop.blk]))
            for t in range(TOKENS):
                sx = b.load(b.gep(xs_tokens[t], [min_loop.blk]))
                acc, acc_next = min_loop.carried[2 * (r * TOKENS + t) : 2 * (r * TOKENS + t) + 2]
                updated += [acc_next, fma(b, block_min, sx, acc)]
        mins = min_loop.close(updated)
    for r in range(rows):
        for t in range(TOKENS):
            at = 2 * (r * TOKENS + t)
            total = _row_total(b, finals[at], finals[at + 1], mins[at], mins[at + 1])
            b.store(total, b.gep(out, [b.add(b.mul(out_stride, i64(t)), i64(r))]))
    b.ret_void()
    return fn


# q, scv, mn (a tile unpacked by `unpack`), xq, xd, xs, nb, out, rows, n (tokens), k, m
_TILE_ARGS = [P8, PF, PF, P8, PF, PF, I64, PF, I64, I64, I64, I64]


def _tile_function(module: ir.Module, kind: int, isa: str) -> ir.Function:
    """A tile of ``rows`` (1-4) unpacked rows against ``n`` tokens, in one call: tokens in
    pairs (a last odd one as a pair with itself), rows in pairs, a last odd row alone;
    ``out[t * m + r]``. Two rows of two tokens at a time because each row and token holds
    two chains of 8-lane sums: 8 of AVX2's 16 registers. One call per tile: a call per row
    pair and token pair cost a third of an 8-token matmul (docs/numba.md)."""
    fn, new = new_function(module, f"realm_int8_tile_k{kind}_{isa}", _TILE_ARGS)
    if not new:
        return fn
    pair, single = (_unpacked_function(module, kind, r, isa) for r in (2, 1))
    for f in (pair, single):
        f.attributes.add("alwaysinline")
    q, scv, mn, xq, xd, xs, nb, out, rows, n, k, m = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    tokens = BlockLoop(fn, b, b.sdiv(b.add(n, i64(1)), i64(2)), [])
    t = b.mul(tokens.blk, i64(2))
    step = b.zext(b.icmp_signed("<", b.add(t, i64(1)), n), I64)  # 0: the last token is alone
    at_token = [b.gep(xq, [b.mul(b.mul(t, k), i64(2))]), b.gep(xd, [b.mul(t, nb)]), b.gep(xs, [b.mul(t, nb)])]
    strides = [b.mul(step, k), b.mul(step, nb), b.mul(step, m)]

    def call(f, dr):
        at_row = [b.gep(q, [b.mul(b.mul(dr, k), i64(2))]), b.gep(scv, [b.mul(b.mul(dr, nb), i64(8))]),
                  b.gep(mn, [b.mul(dr, nb)])]  # fmt: skip
        b.call(f, [*at_row, *at_token, nb, b.gep(out, [b.add(b.mul(t, m), dr)]), *strides])

    pairs = BlockLoop(fn, b, b.sdiv(rows, i64(2)), [])
    call(pair, b.mul(pairs.blk, i64(2)))
    pairs.close([])
    odd = BlockLoop(fn, b, b.srem(rows, i64(2)), [])  # zero or one pass: the last row alone
    call(single, b.sub(rows, i64(1)))
    odd.close([])
    tokens.close([])
    b.ret_void()
    return fn


def _dispatch(module: ir.Module, name: str, args: list, cases: dict[int, ir.Function]) -> ir.Function:
    """An entry point taking a selector first and calling ``cases[selector]`` with the rest."""
    fn, new = new_function(module, name, [I64, *args])
    if not new:
        return fn
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    unknown = fn.append_basic_block("unknown")
    switch = b.switch(fn.args[0], unknown)
    for selector, target in cases.items():
        block = fn.append_basic_block(f"case_{selector}")
        switch.add_case(i64(selector), block)
        b.position_at_end(block)
        b.call(target, fn.args[1:])
        b.ret_void()
    b.position_at_end(unknown)  # the backend only routes FORMATS here
    b.ret_void()
    return fn


def _pointer_args(context, builder, signature, args) -> list:
    """Each array argument, with the element offset that follows it, as one data pointer.

    Offsets instead of array slices: a slice in numba is a new array whose reference count
    goes up and down (two atomic operations), which per row cost more than a short row's work.
    """
    values, i = [], 0
    while i < len(args):
        ty = signature.args[i]
        if isinstance(ty, types.Array):
            data = context.make_array(ty)(context, builder, args[i]).data
            at = context.cast(builder, args[i + 1], signature.args[i + 1], types.int64)
            is_float = isinstance(ty.dtype, types.Float)  # float32 scales; quants are bytes to IR
            values.append(builder.bitcast(builder.gep(data, [at]), PF if is_float else P8))
            i += 2
        else:
            values.append(context.cast(builder, args[i], ty, types.int64))
            i += 1
    return values


def void_call(build_entry, *arg_types):
    """An intrinsic's (signature, codegen) calling ``build_entry(module)`` with its arguments."""

    def codegen(context, builder, signature, args):
        builder.call(build_entry(builder.module), _pointer_args(context, builder, signature, args))
        return context.get_dummy_value()

    return types.void(*arg_types), codegen


def dot_rows_intrinsic(isa: str):
    """``dot_rows(code, w, w_at, row_bytes, rows, xq, xq_at, xd, xd_at, xs, xs_at, nb, out, out_at,
    tokens, out_stride)``: ``rows`` consecutive weight rows (``row_bytes`` apart), each against
    ``tokens`` consecutive tokens, into ``out[t * out_stride + r]``; each row and token as
    `_inline_function` computes it."""

    def entry(module):
        cases = {code: _rows_function(module, fmt, isa) for code, fmt in FORMATS.items()}
        return _dispatch(module, f"realm_int8_rows_{isa}", _ROWS_ARGS, cases)

    @intrinsic
    def dot_rows(typingctx, code, w, w_at, row_bytes, rows, xq, xq_at, xd, xd_at, xs, xs_at, nb, out, out_at,
                 tokens, out_stride):  # fmt: skip
        return void_call(entry, code, w, w_at, row_bytes, rows, xq, xq_at, xd, xd_at, xs, xs_at, nb, out,
                         out_at, tokens, out_stride)  # fmt: skip

    return dot_rows


def unpack_intrinsic(isa: str):
    """``unpack(code, w, w_at, row_bytes, rows, nb, q, q_at, scv, scv_at, mn, mn_at)``:
    ``rows`` consecutive rows (``row_bytes`` apart) into the scratch, row ``r`` at
    ``q[r * 32 nb]``, ``scv[r * 8 nb]``, ``mn[r * nb]``."""

    def entry(module):
        cases = {code: _unpack_rows_function(module, fmt, isa) for code, fmt in FORMATS.items()}
        return _dispatch(module, f"realm_int8_unpack_rows_{isa}", _UNPACK_ROWS_ARGS, cases)

    @intrinsic
    def unpack(typingctx, code, w, w_at, row_bytes, rows, nb, q, q_at, scv, scv_at, mn, mn_at):
        return void_call(entry, code, w, w_at, row_bytes, rows, nb, q, q_at, scv, scv_at, mn, mn_at)

    return unpack


def dot_tile_intrinsic(isa: str):
    """``dot_tile(kind, q, q_at, scv, scv_at, mn, mn_at, xq, xq_at, xd, xd_at, xs, xs_at, nb, out,
    out_at, rows, n, k, m)``: a tile of ``rows`` rows unpacked by `unpack` against ``n`` tokens
    of ``k`` values, into ``out[t * m + r]``; each row and token as `dot_rows` computes it."""

    def entry(module):
        cases = {kind: _tile_function(module, kind, isa) for kind in UNPACKED_KINDS}
        return _dispatch(module, f"realm_int8_tile_{isa}", _TILE_ARGS, cases)

    @intrinsic
    def dot_tile(typingctx, kind, q, q_at, scv, scv_at, mn, mn_at, xq, xq_at, xd, xd_at, xs, xs_at, nb, out,
                 out_at, rows, n, k, m):  # fmt: skip
        return void_call(entry, kind, q, q_at, scv, scv_at, mn, mn_at, xq, xq_at, xd, xd_at, xs, xs_at, nb,
                         out, out_at, rows, n, k, m)  # fmt: skip

    return dot_tile
