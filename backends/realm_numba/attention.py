"""Causal softmax attention over a KV cache: grouped-query, sliding window, soft-capping.

One task is one (query token, query head) pair; threads take fixed, interleaved sets
of tasks and one scores scratch each. Only cache rows ``<= query position`` are ever
read, so rows past ``n_past + n`` may hold anything.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from realm_numba.scalars import JIT_FAST, JIT_PARALLEL, exp_f32


@njit(**JIT_FAST)
def _attend(q, k_cache, v_cache, n_past, scale, window, softcap, out, task, scores):
    """Attention of one (token, head) task; ``window``/``softcap`` <= 0 mean off."""
    n_head = q.shape[1]
    head_dim = q.shape[2]
    group = n_head // k_cache.shape[1]
    t = task // n_head
    h = task % n_head
    kv = h // group
    pos = n_past + t
    first = max(0, pos - window + 1) if window > 0 else 0
    qv = q[t, h]
    best = np.float32(-np.inf)
    for j in range(first, pos + 1):
        kj = k_cache[j, kv]
        s = np.float32(0.0)
        for i in range(head_dim):
            s += qv[i] * kj[i]
        s = s * scale
        if softcap > 0:
            s = softcap * math.tanh(s / softcap)
        scores[j - first] = s
        best = max(best, s)
    total = np.float32(0.0)
    for j in range(pos + 1 - first):
        p = exp_f32(scores[j] - best)
        scores[j] = p
        total += p
    o = out[t, h]
    for i in range(v_cache.shape[2]):
        o[i] = np.float32(0.0)
    for j in range(first, pos + 1):
        p = scores[j - first]
        vj = v_cache[j, kv]
        for i in range(v_cache.shape[2]):
            o[i] += p * vj[i]
    inv_total = np.float32(1.0) / total
    for i in range(v_cache.shape[2]):
        o[i] *= inv_total


@njit(**JIT_FAST)
def attention_serial(q, k_cache, v_cache, n_past, scale, window, softcap, out):
    """All tasks on the calling thread (decode with a short context)."""
    scores = np.empty(n_past + q.shape[0], dtype=np.float32)
    for task in range(q.shape[0] * q.shape[1]):
        _attend(q, k_cache, v_cache, n_past, scale, window, softcap, out, task, scores)


@njit(**JIT_PARALLEL)
def attention_parallel(q, k_cache, v_cache, n_past, scale, window, softcap, out, n_chunks):
    """Tasks dealt out to ``n_chunks`` threads in turn: thread ``c`` takes tasks ``c``,
    ``c + n_chunks``, ... A causal task's cost grows with its token's position, so
    contiguous ranges would leave the thread holding the first tokens idle for most of
    a prefill; dealing in turn gives every thread early and late tokens alike."""
    n_tasks = q.shape[0] * q.shape[1]
    for c in prange(n_chunks):
        scores = np.empty(n_past + q.shape[0], dtype=np.float32)
        for task in range(c, n_tasks, n_chunks):
            _attend(q, k_cache, v_cache, n_past, scale, window, softcap, out, task, scores)
