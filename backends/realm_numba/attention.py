"""Causal softmax attention: grouped-query, sliding window, soft-capping; over a paged KV cache.

One task is one token's query heads that share a kv head (or a part of them), computed
start to end by one thread: each key and value row is loaded once for all of the task's
heads, which matters because decode attention reads more KV bytes per step than the
weights once several sequences run. Each head's arithmetic is the same whichever task
it falls in (its own loops, in a fixed order), and threads take fixed, interleaved sets of
tasks with one scratch each, so a token's result does not depend on how many other
tokens share the call or how the heads were split (batch invariance). Only keys at
positions ``<= query position`` are ever read, so pool slots past those may hold anything.

Dense attention over one sequence's cache is the paged kernel with a one-block table
(the whole cache is block 0): the softmax, soft-cap and window are written once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from realm_numba.elementwise import rope_angles, rope_frequencies, rotate_heads
from realm_numba.scalars import JIT, JIT_FAST, JIT_PARALLEL, exp_f32, prefetch

KEYS_PER_PASS = 4  # keys whose dot products (and value rows) one pass over head_dim takes
PREFETCH_KEYS = 8  # how far ahead of a pass its rows are asked for (`_prefetch_rows`)
# Attention below this many multiply-adds runs on the calling thread: a parallel region
# costs a few microseconds, more than a short decode step's attention.
PARALLEL_MIN_MACS = 1 << 14


@njit(**JIT)
def attention_plan(n, n_head, n_kv, head_dim, positions, threads):
    """``(n_keys, n_split, n_chunks)`` for `attention_paged` over ``n`` tokens at ``positions``.

    ``n_keys``: the longest scores row a task needs. A kv head's query heads are split over
    ``n_split`` tasks only when there are fewer tokens x kv heads than threads (one decode
    token of a one-kv-head model). Each task reads all of its kv head's keys and values
    whatever its share of the heads, so splitting further costs more reads than it saves:
    a SmolLM2 decode token (3 kv heads, 2 threads) took 17.1 us unsplit against 19.6 us
    split in two, gemma-3's (1 kv head) 18.2 us in two parts against 24.5 in four (position
    160; docs/performance.md).
    """
    n_keys = np.int64(positions.max()) + 1
    if n * n_head * n_keys * head_dim < PARALLEL_MIN_MACS:
        threads = 1
    tasks = n * n_kv
    n_split = min(n_head // n_kv, -(-threads // tasks))
    return n_keys, n_split, min(threads, tasks * n_split)


@njit(**JIT)
def _prefetch_rows(pool, slot, kv):
    """Prefetch the `KEYS_PER_PASS` rows of kv head ``kv`` from ``slot`` on (any slot: a hint).

    A kv head's rows are ``n_kv`` rows apart in the pool, a stride the hardware prefetchers
    did not follow: without this, 30 layers' keys and values read from memory took 2.6x as
    long as from cache (SmolLM2, 160 positions).
    """
    row_bytes = pool.shape[2] * 4
    for r in range(KEYS_PER_PASS):
        address = pool.ctypes.data + ((slot + r) * pool.shape[1] + kv) * row_bytes
        for line in range(0, row_bytes, 64):
            prefetch(address + line)


@njit(**JIT_FAST)
def _capped(s, scale, softcap):
    s = s * scale
    if softcap > 0:
        s = softcap * math.tanh(s / softcap)
    return s


@njit(**JIT_FAST)
def _scores(q, k_pool, table_row, block_size, kv, first, pos, scale, softcap, scores, best):
    """``scores[g, p - first]`` = scaled (soft-capped) ``q[g] . key(p)`` for ``p`` in
    ``first..pos``; ``best[g]`` their maximum. Keys go four to a pass over ``head_dim``.

    Arrays are indexed element by element, not sliced per key: in numba each slice is a new
    array whose reference count goes up and down (atomic operations).
    """
    n_q, head_dim = q.shape
    for g in range(n_q):
        best[g] = np.float32(-np.inf)
    for b in range(first // block_size, pos // block_size + 1):
        start = b * block_size
        p = max(first, start)
        hi = min(pos + 1, start + block_size)
        base = table_row[b] * block_size - start  # slot of position p: base + p
        while p + KEYS_PER_PASS <= hi:
            at = base + p
            j = p - first
            _prefetch_rows(k_pool, at + PREFETCH_KEYS, kv)
            for g in range(n_q):
                s0 = s1 = s2 = s3 = np.float32(0.0)
                for i in range(head_dim):
                    x = q[g, i]
                    s0 += x * k_pool[at, kv, i]
                    s1 += x * k_pool[at + 1, kv, i]
                    s2 += x * k_pool[at + 2, kv, i]
                    s3 += x * k_pool[at + 3, kv, i]
                s0, s1 = _capped(s0, scale, softcap), _capped(s1, scale, softcap)
                s2, s3 = _capped(s2, scale, softcap), _capped(s3, scale, softcap)
                scores[g, j], scores[g, j + 1], scores[g, j + 2], scores[g, j + 3] = s0, s1, s2, s3
                best[g] = max(best[g], max(max(s0, s1), max(s2, s3)))
            p += KEYS_PER_PASS
        while p < hi:
            for g in range(n_q):
                s = np.float32(0.0)
                for i in range(head_dim):
                    s += q[g, i] * k_pool[base + p, kv, i]
                s = _capped(s, scale, softcap)
                scores[g, p - first] = s
                best[g] = max(best[g], s)
            p += 1


@njit(**JIT_FAST)
def _weigh_values(v_pool, table_row, block_size, kv, first, pos, weights, out):
    """``out[g] = sum_p weights[g, p - first] * value(p)``, four value rows to a pass (no
    slices: see `_scores`)."""
    n_q, v_dim = out.shape
    for g in range(n_q):
        for i in range(v_dim):
            out[g, i] = np.float32(0.0)
    for b in range(first // block_size, pos // block_size + 1):
        start = b * block_size
        p = max(first, start)
        hi = min(pos + 1, start + block_size)
        base = table_row[b] * block_size - start
        while p + KEYS_PER_PASS <= hi:
            at = base + p
            j = p - first
            _prefetch_rows(v_pool, at + PREFETCH_KEYS, kv)
            for g in range(n_q):
                e0, e1, e2, e3 = weights[g, j], weights[g, j + 1], weights[g, j + 2], weights[g, j + 3]
                for i in range(v_dim):
                    out[g, i] += (e0 * v_pool[at, kv, i] + e1 * v_pool[at + 1, kv, i]) + (
                        e2 * v_pool[at + 2, kv, i] + e3 * v_pool[at + 3, kv, i]
                    )
            p += KEYS_PER_PASS
        while p < hi:
            for g in range(n_q):
                e = weights[g, p - first]
                for i in range(v_dim):
                    out[g, i] += e * v_pool[base + p, kv, i]
            p += 1


@njit(**JIT_FAST)
def _attend_heads(q, k_pool, v_pool, table_row, block_size, kv, pos, scale, window, softcap,
                  out, scores, best, total):
    """``out[g]`` = attention of query head ``q[g]`` at position ``pos`` over positions
    ``0..pos`` (the last ``window`` of them when ``window`` > 0), all reading kv head ``kv``.

    Position ``p``'s key and value sit at slot ``table_row[p // block_size] * block_size +
    p % block_size``; ``softcap`` <= 0 means off. ``scores [>= n_q, >= pos + 1]``, ``best``
    and ``total [>= n_q]`` are scratch.
    """
    n_q = q.shape[0]
    first = max(0, pos - window + 1) if window > 0 else 0
    _scores(q, k_pool, table_row, block_size, kv, first, pos, scale, softcap, scores, best)
    n = pos + 1 - first
    for g in range(n_q):
        top = best[g]
        t = np.float32(0.0)
        for j in range(n):
            e = exp_f32(scores[g, j] - top)
            scores[g, j] = e
            t += e
        total[g] = t
    _weigh_values(v_pool, table_row, block_size, kv, first, pos, scores, out)
    for g in range(n_q):
        inv_total = np.float32(1.0) / total[g]
        for i in range(out.shape[1]):
            out[g, i] *= inv_total


@njit(**JIT_PARALLEL)
def attention_paged(q, k_pool, v_pool, block_table, block_size, seq_ids, positions, scale,
                    window, softcap, out, n_keys, n_split, n_chunks):
    """Token ``t`` attends to positions ``0..positions[t]`` of sequence ``seq_ids[t]`` through
    ``block_table``; ``n_keys`` > every position.

    A task is token ``t``'s query heads of one kv head, or one of ``n_split`` parts of them
    (so that a single token still gives every thread work). Tasks are dealt to ``n_chunks``
    threads in turn: a causal task's cost grows with its position, so contiguous ranges
    would leave the thread holding a prefill's first tokens idle; dealing in turn gives
    every thread early and late tokens alike. A head's arithmetic is the same whatever
    ``n_split``, ``n_chunks`` and the rest of the batch, so one kernel serves one token or
    many (a serial twin compiled apart could round differently, breaking batch invariance).
    """
    n_head = q.shape[1]
    n_kv = k_pool.shape[1]
    group = n_head // n_kv
    per_task = -(-group // n_split)
    n_tasks = q.shape[0] * n_kv * n_split
    for c in prange(n_chunks):
        scores = np.empty((per_task, n_keys), dtype=np.float32)
        best = np.empty(per_task, dtype=np.float32)
        total = np.empty(per_task, dtype=np.float32)
        for task in range(c, n_tasks, n_chunks):
            t = task // (n_kv * n_split)
            kv = task // n_split % n_kv
            h0 = kv * group + task % n_split * per_task
            h1 = min(h0 + per_task, (kv + 1) * group)
            if h0 < h1:
                _attend_heads(q[t, h0:h1], k_pool, v_pool, block_table[seq_ids[t]], block_size, kv,
                              positions[t], scale, window, softcap, out[t, h0:h1], scores, best,
                              total)


@njit(**JIT)
def set_rows(src, dst, rows):
    """``dst[rows[i]] = src[i]`` over flat row views ``[rows, row_elems]``, after checking every
    row id: returns -1 when written, else `rows_refused`'s answer (nothing written)."""
    bad = rows_refused(rows, dst.shape[0])
    if bad != -1:
        return bad
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(src.shape[1]):
            dst[r, j] = src[i, j]
    return -1


@njit(**JIT)
def rows_refused(rows, n_dst):
    """-1 when every row id is in ``[0, n_dst)`` and none repeats; else the first position of
    one outside, or -2 for a repeat."""
    n = rows.shape[0]
    for i in range(n):
        if rows[i] < 0 or rows[i] >= n_dst:
            return i
    if n > 1:
        ordered = np.sort(rows)
        for i in range(1, n):
            if ordered[i] == ordered[i - 1]:
                return -2
    return -1


@njit(**JIT)
def rope_write_kv(q, k, v, positions, n_rot, base, neox, freq_factors, has_freq_factors, freq_scale,
                  k_pool, v_pool, slots):
    """`rope` of ``q [n, heads, hd]`` and ``k [n, kv_heads, hd]`` in place, then the pools'
    ``[slots, kv_heads, hd]`` rows ``slots[i]`` take ``k[i]`` and ``v[i]``: a token's angles
    are computed once for both, by rope's own functions (the same bits). Returns as
    `set_rows`; refused slots leave everything unwritten."""
    bad = rows_refused(slots, k_pool.shape[0])
    if bad != -1:
        return bad
    inv_freq = rope_frequencies(n_rot, base, freq_factors, has_freq_factors, freq_scale)
    cos = np.empty(n_rot // 2, dtype=np.float32)
    sin = np.empty(n_rot // 2, dtype=np.float32)
    for t in range(q.shape[0]):
        rope_angles(positions[t], inv_freq, cos, sin)
        rotate_heads(q[t], n_rot, neox, cos, sin, q[t])
        rotate_heads(k[t], n_rot, neox, cos, sin, k[t])
        r = slots[t]
        k_pool[r] = k[t]
        v_pool[r] = v[t]
    return -1
