"""The matmul kernels, one per weight kind, for any number of tokens (batch-invariant).

``out [n, m] = x [n, k] @ w.T``. Each thread owns a fixed range of weight rows (whole
tiles of four). It decodes a tile's rows once into a ``[4, k]`` float32 scratch (see
matvec.py), then runs every token against it: weights are read and decoded once per
call however many tokens there are, and a one-token call costs one decode of each row.

Batch invariance: the bits of ``out[t, r]`` depend only on ``x[t]`` and row ``r`` of the
weight, not on ``n``, on the other tokens or on the thread count. Every token goes
through the same loop, `_tile_times_tokens`, whose vectorized reduction order (lanes and
their final sum) LLVM fixes from ``k`` alone, and tiles are fixed by ``m`` (row ``r`` is
always in tile ``r // 4``; threads split whole tiles; a partial last tile is padded, its
stale rows' results dropped). A batching engine relies on this: a sequence's tokens must
not change with what else shares its step. Blocking several tokens into registers
would give them a loop, and so a summation order, other than a lone token's (LLVM picks
the vectorization per loop), so tokens are not blocked: measured, this loop at one
token per pass already beats the 4x4 register-blocked GEMM it replaced, whose
whole-row exact decode cost more than its blocking saved.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from realm_numba.rows import decode_for_matmul
from realm_numba.scalars import JIT_FAST, JIT_PARALLEL

TILE = 4  # weight rows decoded together and dotted with each token in one pass over k


@njit(**JIT_FAST, inline="always")
def _tile_times_tokens(x, tile, out, r0, rows):
    """``out[:, r0:r0+rows] = x @ tile[:rows].T`` for a ``[4, k]`` tile, token by token."""
    n, k = x.shape
    w0, w1, w2, w3 = tile[0], tile[1], tile[2], tile[3]
    for t in range(n):
        xt = x[t]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for i in range(k):
            u = xt[i]
            a0 += u * w0[i]
            a1 += u * w1[i]
            a2 += u * w2[i]
            a3 += u * w3[i]
        acc = (a0, a1, a2, a3)
        for dr in range(rows):
            out[t, r0 + dr] = acc[dr]


@njit(**JIT_PARALLEL)
def matmul_quant(code, x, w, out, n_chunks, lanes):
    """``out = x @ decode(w).T`` for raw blocks ``w [m, row_bytes]`` of GGML type ``code``.

    ``n_chunks`` (the thread count) fixed ranges of whole tiles; ``lanes`` as rows.LANES.
    """
    m = w.shape[0]
    k = x.shape[1]
    tiles = (m + TILE - 1) // TILE
    n_chunks = max(1, min(n_chunks, tiles))
    for c in prange(n_chunks):
        tile = np.zeros((TILE, k), dtype=np.float32)
        for ti in range(c * tiles // n_chunks, (c + 1) * tiles // n_chunks):
            r0 = ti * TILE
            rows = min(TILE, m - r0)
            for dr in range(rows):
                decode_for_matmul(code, w[r0 + dr], tile[dr], lanes)
            _tile_times_tokens(x, tile, out, r0, rows)


@njit(**JIT_PARALLEL)
def matmul_f32(x, w, out, n_chunks):
    """``out = x @ w.T`` for a float32 weight ``w [m, k]`` (rows copied to a tile only at the edge)."""
    m = w.shape[0]
    k = x.shape[1]
    tiles = (m + TILE - 1) // TILE
    n_chunks = max(1, min(n_chunks, tiles))
    for c in prange(n_chunks):
        edge = np.zeros((TILE, k), dtype=np.float32)
        for ti in range(c * tiles // n_chunks, (c + 1) * tiles // n_chunks):
            r0 = ti * TILE
            rows = min(TILE, m - r0)
            if rows == TILE:
                _tile_times_tokens(x, w[r0 : r0 + TILE], out, r0, rows)
            else:
                edge[:rows] = w[r0 : r0 + rows]
                _tile_times_tokens(x, edge, out, r0, rows)
