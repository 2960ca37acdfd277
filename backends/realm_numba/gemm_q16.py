"""The matmul with 16-bit integer activations (``matmul_q16``): integer dot products.

``out [n, m] = q16(x) [n, k] @ decode(w).T``: each token's row is rounded to 16-bit blocks
of 32 (`quantize_rows`, the reference's `realm.quants.activations.quantize_q16`), then
every weight block, unpacked to 8-bit integers, is dotted with it in integers (dot_ir.py)
and scaled in float.

Batch invariance holds as for the float matmul (gemm.py): a token is quantized alone,
and ``out[t, r]`` comes from dot_ir's per-row instruction sequence, the same for any
``n``, any row group and any thread count. Threads split whole tiles of four rows. A
decode (one or two tokens) reads a tile's rows one after another, each straight from the
weight bytes; a prompt unpacks the tile once and runs its tokens two at a time.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from realm_numba.dot_ir import dot_rows_intrinsic, dot_tile_intrinsic, unpack_intrinsic
from realm_numba.elementwise import rms_norm
from realm_numba.quantize_ir import quantize_blocks
from realm_numba.scalars import JIT
from realm_numba.vector_ir import host_isa

# No fast-math anywhere here. numba gives fast-math flags to every float instruction of a
# fast-math function's module, dot_ir's included, and LLVM then reorders and fuses them
# differently in each place they are inlined: a row's bits would depend on the path (a
# decode's or a prompt's) that computed it. Set explicitly: a callee inherits its caller's
# flags unless it sets its own. (quantize_rows' divisions also stay divisions.)
EXACT = {**JIT, "fastmath": False}
TILE = 4
ISA = host_isa()
_rows = dot_rows_intrinsic(ISA)
_tile_dot = dot_tile_intrinsic(ISA)
_unpack = unpack_intrinsic(ISA)
# Up to this many tokens, quants are unpacked in registers for each token; past it, once
# per tile into a scratch (same bits either way, see dot_ir.py).
INLINE_MAX_TOKENS = 2


@njit(**EXACT)
def quantize_rows(x, xq, xd, xs):
    """Each 32-value block of ``x [n, k]`` as int16 ``xq`` times ``xd``; ``xs = xd * sum(xq)``.

    ``d = max|x| / 32767``, ``q = rint(x / d)`` (ties to even), in float32, rounded as the
    reference's numpy rounds them (`realm.quants.activations`), stored in order. A NaN
    anywhere in a block makes its scale NaN, so it reaches the outputs as the float
    matmul's would. In 8-lane IR (quantize_ir.py); every array C-contiguous.
    """
    n, k = x.shape
    nb = k // 32
    rows_apart = x.strides[0] != 4 * k or xq.strides[0] != 2 * k or xd.strides[0] != 4 * nb
    if rows_apart or xs.strides[0] != 4 * nb or x.strides[1] != 4:  # the callers' are C-contiguous
        raise ValueError("quantize_rows: x, xq, xd and xs must be C-contiguous")
    quantize_blocks(x, 0, n * nb, xq, 0, xd, 0, xs, 0)


@njit(**{**EXACT, "inline": "always"})
def _decode_rows(code, w, out, lo, hi, first, xq, xd, xs):
    """A decode's rows of ``w`` in tiles ``lo .. hi`` (``w``'s tiles numbered from ``first``).

    One call for all of them, row after row: reading four rows side by side, a block of each
    at a time, made the hardware prefetchers fetch a large weight at ~60% of the bandwidth;
    a call per row cost as much as a short row's work (docs/numba.md). Arrays reach dot_ir
    as (array, element offset): see dot_ir._pointer_args.
    """
    m, row_bytes = w.shape
    r0 = max(lo - first, 0) * TILE
    r1 = min(max(hi - first, 0) * TILE, m)
    if r1 > r0:
        n, k = xq.shape
        _rows(code, w, r0 * row_bytes, row_bytes, r1 - r0, xq, 0, xd, 0, xs, 0, k // 32, out, r0, n, m)


@njit(**{**EXACT, "inline": "always"})
def _tile(code, kind, w, out, ti, xq, xd, xs, mn, q, scv):
    """Rows ``4 ti ..`` of ``out = q16(x) @ decode(w).T`` for a prompt's tokens (see the module doc)."""
    n, k = xq.shape
    nb = k // 32
    m, row_bytes = w.shape
    r0 = ti * TILE
    rows = min(TILE, m - r0)
    _unpack(code, w, r0 * row_bytes, row_bytes, rows, nb, q, 0, scv, 0, mn, 0)
    _tile_dot(kind, q, 0, scv, 0, mn, 0, xq, 0, xd, 0, xs, 0, nb, out, r0, rows, n, k, m)


@njit(**{**EXACT, "parallel": True})
def matmul_q16(x, norm, eps, codes, kinds, w0, out0, w1, out1, w2, out2, n_chunks):
    """``out_i = q16(x) @ decode(w_i).T`` for up to three weights sharing ``x`` (Q/K/V, gate/up).

    ``w_i [m_i, row_bytes_i]`` are raw blocks of GGML type ``codes[i]``; ``kinds[i]`` is its
    format's `dot_ir.unpacked_kind`. An unused weight has no rows. ``x`` is rounded once;
    the threads split the three weights' tiles together, whole tiles each. A ``norm`` weight
    (empty: none) has the rows rounded from ``rms_norm(x, norm, eps)`` instead, computed by
    the rms_norm op's own kernel (the same bits as the two calls).
    """
    n, k = x.shape
    nb = k // 32
    xq = np.empty((n, k), dtype=np.int16)
    xd = np.empty((n, nb), dtype=np.float32)
    xs = np.empty((n, nb), dtype=np.float32)
    if norm.shape[0] > 0:
        normed = np.empty((n, k), dtype=np.float32)
        rms_norm(x, norm, eps, normed)
        quantize_rows(normed, xq, xd, xs)
    else:
        quantize_rows(x, xq, xd, xs)
    t0 = (w0.shape[0] + TILE - 1) // TILE
    t1 = (w1.shape[0] + TILE - 1) // TILE
    tiles = t0 + t1 + (w2.shape[0] + TILE - 1) // TILE
    n_chunks = max(1, min(n_chunks, tiles))
    for c in prange(n_chunks):
        lo, hi = c * tiles // n_chunks, (c + 1) * tiles // n_chunks
        if n <= INLINE_MAX_TOKENS:
            _decode_rows(codes[0], w0, out0, lo, hi, 0, xq, xd, xs)
            _decode_rows(codes[1], w1, out1, lo, hi, t0, xq, xd, xs)
            _decode_rows(codes[2], w2, out2, lo, hi, t0 + t1, xq, xd, xs)
            continue
        mn = np.empty((TILE, nb), dtype=np.float32)
        q = np.empty((TILE, k), dtype=np.int16)
        scv = np.empty((TILE, 8 * nb), dtype=np.float32)
        for ti in range(lo, hi):
            if ti < t0:
                _tile(codes[0], kinds[0], w0, out0, ti, xq, xd, xs, mn, q, scv)
            elif ti < t0 + t1:
                _tile(codes[1], kinds[1], w1, out1, ti - t0, xq, xd, xs, mn, q, scv)
            else:
                _tile(codes[2], kinds[2], w2, out2, ti - t0 - t1, xq, xd, xs, mn, q, scv)
