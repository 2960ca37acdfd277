"""Causal softmax attention: grouped-query, sliding window, soft-capping; dense or paged.

One task is one (query token, query head) pair, computed start to end by one thread with
a fixed summation order; threads take fixed, interleaved sets of tasks and one scores
scratch each. So a task's result does not depend on how many other tasks share the call
(batch invariance). Only keys at positions ``<= query position`` are ever read, so cache
rows (or pool slots) past those may hold anything.

Both ops share one task body, `_attend_row`: keys reached through a block table. Dense
attention is the one-block case (the whole cache is block 0), so the softmax, soft-cap
and window are written once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from realm_numba.scalars import JIT, JIT_FAST, JIT_PARALLEL, exp_f32


@njit(**JIT_FAST)
def _attend_row(qv, k_pool, v_pool, table_row, block_size, kv, pos, scale, window, softcap,
                o, scores):
    """``o`` = attention of query ``qv`` at position ``pos`` over positions ``0..pos``.

    Position ``p``'s key and value sit at slot ``table_row[p // block_size] * block_size +
    p % block_size``, kv head ``kv``; ``window``/``softcap`` <= 0 mean off. The blocks are
    walked in order, so the slot costs no division per key.
    """
    head_dim = qv.shape[0]
    first = max(0, pos - window + 1) if window > 0 else 0
    first_block = first // block_size
    last_block = pos // block_size
    best = np.float32(-np.inf)
    for b in range(first_block, last_block + 1):
        start = b * block_size
        lo = max(first, start)
        hi = min(pos + 1, start + block_size)
        base = table_row[b] * block_size - start  # slot of position p: base + p
        for p in range(lo, hi):
            kj = k_pool[base + p, kv]
            s = np.float32(0.0)
            for i in range(head_dim):
                s += qv[i] * kj[i]
            s = s * scale
            if softcap > 0:
                s = softcap * math.tanh(s / softcap)
            scores[p - first] = s
            best = max(best, s)
    total = np.float32(0.0)
    for j in range(pos + 1 - first):
        e = exp_f32(scores[j] - best)
        scores[j] = e
        total += e
    v_dim = v_pool.shape[2]
    for i in range(v_dim):
        o[i] = np.float32(0.0)
    for b in range(first_block, last_block + 1):
        start = b * block_size
        lo = max(first, start)
        hi = min(pos + 1, start + block_size)
        base = table_row[b] * block_size - start
        for p in range(lo, hi):
            e = scores[p - first]
            vj = v_pool[base + p, kv]
            for i in range(v_dim):
                o[i] += e * vj[i]
    inv_total = np.float32(1.0) / total
    for i in range(v_dim):
        o[i] *= inv_total


@njit(**JIT_FAST)
def _attend(q, k_cache, v_cache, n_past, scale, window, softcap, out, task, scores, one_block):
    """Dense attention of one (token, head) task: the cache is block 0 of a one-block table."""
    n_head = q.shape[1]
    t = task // n_head
    h = task % n_head
    kv = h // (n_head // k_cache.shape[1])
    _attend_row(q[t, h], k_cache, v_cache, one_block, k_cache.shape[0], kv, n_past + t, scale,
                window, softcap, out[t, h], scores)


@njit(**JIT_FAST)
def attention_serial(q, k_cache, v_cache, n_past, scale, window, softcap, out):
    """All tasks on the calling thread (decode with a short context)."""
    scores = np.empty(n_past + q.shape[0], dtype=np.float32)
    one_block = np.zeros(1, dtype=np.int32)
    for task in range(q.shape[0] * q.shape[1]):
        _attend(q, k_cache, v_cache, n_past, scale, window, softcap, out, task, scores, one_block)


@njit(**JIT_PARALLEL)
def attention_parallel(q, k_cache, v_cache, n_past, scale, window, softcap, out, n_chunks):
    """Tasks dealt out to ``n_chunks`` threads in turn: thread ``c`` takes tasks ``c``,
    ``c + n_chunks``, ... A causal task's cost grows with its token's position, so
    contiguous ranges would leave the thread holding the first tokens idle for most of
    a prefill; dealing in turn gives every thread early and late tokens alike."""
    n_tasks = q.shape[0] * q.shape[1]
    one_block = np.zeros(1, dtype=np.int32)
    for c in prange(n_chunks):
        scores = np.empty(n_past + q.shape[0], dtype=np.float32)
        for task in range(c, n_tasks, n_chunks):
            _attend(q, k_cache, v_cache, n_past, scale, window, softcap, out, task, scores,
                    one_block)


@njit(**JIT_PARALLEL)
def attention_paged(q, k_pool, v_pool, block_table, block_size, seq_ids, positions, scale,
                    window, softcap, out, n_keys, n_chunks):
    """Token ``t`` attends to positions ``0..positions[t]`` of sequence ``seq_ids[t]`` through
    ``block_table``; ``n_keys`` > every position. Tasks are dealt to ``n_chunks`` threads in
    turn, as in `attention_parallel`; a task's arithmetic is the same whatever ``n_chunks``
    and whatever else is in the batch, so one kernel serves one token or many (a serial
    twin compiled apart could round differently, breaking batch invariance)."""
    n_head = q.shape[1]
    group = n_head // k_pool.shape[1]
    n_tasks = q.shape[0] * n_head
    for c in prange(n_chunks):
        scores = np.empty(n_keys, dtype=np.float32)
        for task in range(c, n_tasks, n_chunks):
            t = task // n_head
            h = task % n_head
            _attend_row(q[t, h], k_pool, v_pool, block_table[seq_ids[t]], block_size, h // group,
                        positions[t], scale, window, softcap, out[t, h], scores)


@njit(**JIT)
def set_rows(src, dst, rows):
    """``dst[rows[i]] = src[i]`` over flat row views ``[rows, row_elems]``, after checking every
    row id: returns -1 when written, the first position of an id outside ``dst`` (nothing
    written), or -2 when an id repeats (nothing written)."""
    n = rows.shape[0]
    for i in range(n):
        if rows[i] < 0 or rows[i] >= dst.shape[0]:
            return i
    if n > 1:
        ordered = np.sort(rows)
        for i in range(1, n):
            if ordered[i] == ordered[i - 1]:
                return -2
    for i in range(n):
        r = rows[i]
        for j in range(src.shape[1]):
            dst[r, j] = src[i, j]
    return -1
