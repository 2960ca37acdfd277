"""Matrix-matrix products for prefill: many tokens against one weight.

Each thread owns a fixed range of weight rows. It decodes four rows at a time into a
``[4, k]`` float32 scratch (16 KiB for k = 1024, so it stays in L1/L2) and multiplies
them against the tokens four at a time with 16 register accumulators, so every weight
block is decoded once per call however many tokens there are, and never more than
four decoded rows per thread exist at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from realm_numba.rows import decode_row
from realm_numba.scalars import JIT_FAST, JIT_PARALLEL

TILE = 4  # weight rows decoded together; the micro-kernel is TILE tokens x TILE rows


@njit(**JIT_FAST)
def _tile_times_tokens(x, tile, out, r0, rows):
    """``out[:, r0:r0+rows] = x @ tile[:rows].T`` for a ``[4, k]`` tile."""
    n, k = x.shape
    w0, w1, w2, w3 = tile[0], tile[1], tile[2], tile[3]
    for t in range(0, n - n % 4, 4):
        x0, x1, x2, x3 = x[t], x[t + 1], x[t + 2], x[t + 3]
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0.0)
        a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.float32(0.0)
        for i in range(k):
            v0, v1, v2, v3 = w0[i], w1[i], w2[i], w3[i]
            u = x0[i]
            a00 += u * v0
            a01 += u * v1
            a02 += u * v2
            a03 += u * v3
            u = x1[i]
            a10 += u * v0
            a11 += u * v1
            a12 += u * v2
            a13 += u * v3
            u = x2[i]
            a20 += u * v0
            a21 += u * v1
            a22 += u * v2
            a23 += u * v3
            u = x3[i]
            a30 += u * v0
            a31 += u * v1
            a32 += u * v2
            a33 += u * v3
        acc = ((a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33))
        for dt in range(4):
            for dr in range(rows):
                out[t + dt, r0 + dr] = acc[dt][dr]
    for t in range(n - n % 4, n):
        xt = x[t]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for i in range(k):
            u = xt[i]
            a0 += u * w0[i]
            a1 += u * w1[i]
            a2 += u * w2[i]
            a3 += u * w3[i]
        acc1 = (a0, a1, a2, a3)
        for dr in range(rows):
            out[t, r0 + dr] = acc1[dr]


@njit(**JIT_PARALLEL)
def gemm_quant(code, x, w, out, n_chunks):
    """``out = x @ decode(w).T`` for raw blocks ``w [m, row_bytes]`` of GGML type ``code``.

    ``n_chunks`` (the thread count) fixed row ranges, each a whole number of tiles.
    """
    m = w.shape[0]
    k = x.shape[1]
    n_chunks = max(1, min(n_chunks, (m + TILE - 1) // TILE))
    for c in prange(n_chunks):
        tiles = (m + TILE - 1) // TILE
        start = c * tiles // n_chunks * TILE
        stop = min(m, (c + 1) * tiles // n_chunks * TILE)
        tile = np.zeros((TILE, k), dtype=np.float32)
        for r0 in range(start, stop, TILE):
            rows = min(TILE, stop - r0)
            for dr in range(rows):
                decode_row(code, w[r0 + dr], tile[dr])
            _tile_times_tokens(x, tile, out, r0, rows)


@njit(**JIT_PARALLEL)
def gemm_f32(x, w, out, n_chunks):
    """``out = x @ w.T`` for a float32 weight ``w [m, k]`` (rows copied to a tile only at the edge)."""
    m = w.shape[0]
    k = x.shape[1]
    n_chunks = max(1, min(n_chunks, (m + TILE - 1) // TILE))
    for c in prange(n_chunks):
        tiles = (m + TILE - 1) // TILE
        start = c * tiles // n_chunks * TILE
        stop = min(m, (c + 1) * tiles // n_chunks * TILE)
        edge = np.zeros((TILE, k), dtype=np.float32)
        for r0 in range(start, stop, TILE):
            rows = min(TILE, stop - r0)
            if rows == TILE:
                _tile_times_tokens(x, w[r0:r0 + TILE], out, r0, rows)
            else:
                edge[:rows] = w[r0:r0 + rows]
                _tile_times_tokens(x, edge, out, r0, rows)
