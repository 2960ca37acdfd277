"""The compiled loop that runs a recorded step (step.py): every op of a pass in one call.

Each instruction is one row of ``code`` (an opcode, then array indices and sizes) and of
``params`` (its float arguments). Arrays come from three typed lists: ``floats`` (float32
activations, norm weights, KV pools, flattened), ``ints`` (int32 index arrays, 2-D; a
1-D one is row 0 of a 1-row view) and ``weights`` (raw GGML blocks, read-only). Each
instruction calls the same kernel with the same arguments as the backend's op method
does (backend.py), so a program gives the op-by-op results bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from realm_numba.attention import attention_paged, attention_plan, rope_write_kv, set_rows
from realm_numba.elementwise import add, argmax_rows, count_nonfinite, geglu, rms_norm, rope, scale, swiglu
from realm_numba.gemm import matmul_f32, matmul_quant
from realm_numba.gemm_q16 import EXACT, matmul_q16
from realm_numba.rows import get_rows, take_rows

# Opcodes (code[i, 0]); the fields after each are listed where step.py encodes it.
RMS_NORM, ADD, SCALE, SWIGLU, GEGLU, ROPE, SET_ROWS, ATTENTION = 1, 2, 3, 4, 5, 6, 7, 8
MATMUL_Q16, MATMUL_QUANT, MATMUL_F32_BLOCKS, MATMUL_F32 = 9, 10, 11, 12
GET_ROWS, TAKE_ROWS_BLOCKS, TAKE_ROWS, ROPE_WRITE_KV, CHECK_PAGED, COUNT_NONFINITE = 13, 14, 15, 16, 17, 18
ARGMAX_ROWS = 19
FIELDS = 20  # the width of an instruction's row of ``code`` (the opcode and its fields)
# MATMUL_Q16's activation of its gate and up outputs into the gate (field 17).
GATED = {None: 0, "swiglu": 1, "geglu": 2}
REFUSED = 19  # the field where an instruction that refused its indices leaves why (see run_step)


@njit(**EXACT)
def paged_indices_valid(block_table, block_size, n_slots, seq_ids, positions):
    """Whether `realm.op_checks.check_paged_indices` would pass these indices (it says why not).

    The same three tests, compiled, as a program's first instructions (``CHECK_PAGED``): a
    step pays ~1 us for them instead of ~70 us of numpy.
    """
    n_seqs, max_blocks = block_table.shape
    n_blocks = n_slots // block_size
    for i in range(seq_ids.shape[0]):
        s, pos = seq_ids[i], positions[i]
        if s < 0 or s >= n_seqs or pos < 0 or pos >= max_blocks * block_size:
            return False
        for j in range(pos // block_size + 1):
            if block_table[s, j] < 0 or block_table[s, j] >= n_blocks:
                return False
    return True


@njit(**EXACT)
def run_step(code, params, floats, ints, weights, threads):
    """Run every instruction in order. Returns -1, or the instruction that refused its indices
    and wrote nothing (``code[i, REFUSED]`` then holds the kernel's answer: for ``set_rows``
    a position or -2 for a repeat, for ``get_rows`` the position of an id out of range)."""
    for i in range(code.shape[0]):
        if not _run_one(i, code, params, floats, ints, weights, threads):
            return i
    return -1


@njit(**EXACT)
def run_step_quant(code, params, floats, ints, weights, threads):
    """`run_step` for programs with float matmuls of quantized weights (``MATMUL_QUANT``).

    Apart because its kernel holds every format's float decoder, a long compile that a
    model whose matmuls are all integer never needs.
    """
    for i in range(code.shape[0]):
        c = code[i]
        if c[0] == MATMUL_QUANT:  # code, x, n, k, w, out, lanes
            n, m = c[3], weights[c[5]].shape[0]
            matmul_quant(c[1], floats[c[2]].reshape((n, c[4])), weights[c[5]], floats[c[6]].reshape((n, m)),
                         threads, c[7])  # fmt: skip
        elif not _run_one(i, code, params, floats, ints, weights, threads):
            return i
    return -1


@njit(**EXACT)
def _run_one(i, code, params, floats, ints, weights, threads):
    """Instruction ``i`` (any but ``MATMUL_QUANT``); False where it refused its indices."""
    c = code[i]
    op = c[0]
    if op == CHECK_PAGED:  # block_table, block_size, n_slots, seq_ids, positions
        if not paged_indices_valid(ints[c[1]], c[2], c[3], ints[c[4]][0], ints[c[5]][0]):
            code[i, REFUSED] = 1
            return False
    elif op in (GET_ROWS, TAKE_ROWS_BLOCKS, TAKE_ROWS):  # w, ids, n, d, out, code
        ids, out = ints[c[2]][0], floats[c[5]].reshape((c[3], c[4]))
        if op == GET_ROWS:
            bad = get_rows(c[6], weights[c[1]], ids, out)
        elif op == TAKE_ROWS_BLOCKS:  # float32 rows held as bytes
            bad = take_rows(weights[c[1]].view(np.float32), ids, out)
        else:
            bad = take_rows(floats[c[1]].reshape((-1, c[4])), ids, out)
        if bad != -1:
            code[i, REFUSED] = bad
            return False
    elif op == RMS_NORM:  # x, rows, d, weight, out
        rows, d = c[2], c[3]
        rms_norm(
            floats[c[1]].reshape((rows, d)),
            floats[c[4]],
            np.float32(params[i, 0]),
            floats[c[5]].reshape((rows, d)),
        )
    elif op == ADD:  # a, rows, d, b, b_rows, out
        d = c[3]
        add(
            floats[c[1]].reshape((c[2], d)),
            floats[c[4]].reshape((c[5], d)),
            floats[c[6]].reshape((c[2], d)),
        )
    elif op == SCALE:  # x, out
        scale(floats[c[1]], np.float32(params[i, 0]), floats[c[2]])
    elif op == SWIGLU:  # gate, up, out
        swiglu(floats[c[1]], floats[c[2]], floats[c[3]])
    elif op == GEGLU:
        geglu(floats[c[1]], floats[c[2]], floats[c[3]])
    elif op == ROPE:  # x, n, heads, head_dim, positions, n_rot, neox, freq_factors, has_ff, out
        shape = (c[2], c[3], c[4])
        rope(
            floats[c[1]].reshape(shape),
            ints[c[5]][0],
            c[6],
            np.float32(params[i, 0]),
            c[7] != 0,
            floats[c[8]],
            c[9] != 0,
            np.float32(params[i, 1]),
            floats[c[10]].reshape(shape),
        )
    elif op == SET_ROWS:  # src, n, row_bytes, dst, dst_rows, rows
        src = floats[c[1]].view(np.uint8).reshape((c[2], c[3]))
        dst = floats[c[4]].view(np.uint8).reshape((c[5], c[3]))
        bad = set_rows(src, dst, ints[c[6]][0])
        if bad != -1:
            code[i, REFUSED] = bad
            return False
    elif op == ATTENTION:
        _attention(c, params[i], floats, ints, threads)
    elif op == MATMUL_Q16:
        _matmul_q16(c, params[i], floats, weights, threads)
        if c[17] != 0:  # then swiglu or geglu of gate (out 0) and up (out 1), as their op runs
            n, gate, up = c[2], floats[c[7]], floats[c[11]]
            size = n * weights[c[6]].shape[0]
            if c[17] == 1:
                swiglu(gate[:size], up[:size], gate[:size])
            else:
                geglu(gate[:size], up[:size], gate[:size])
    elif op == ROPE_WRITE_KV:
        bad = _rope_write_kv(c, params[i], floats, ints)
        if bad != -1:
            code[i, REFUSED] = bad
            return False
    elif op == COUNT_NONFINITE:  # x, rows, d, out
        count_nonfinite(floats[c[1]].reshape((c[2], c[3])), ints[c[4]][0])
    elif op == ARGMAX_ROWS:  # x, rows, d, out
        argmax_rows(floats[c[1]].reshape((c[2], c[3])), ints[c[4]][0])
    elif op == MATMUL_F32_BLOCKS:  # x, n, k, w (float32 rows held as bytes), out
        n, k = c[2], c[3]
        w = weights[c[4]].view(np.float32)
        matmul_f32(floats[c[1]].reshape((n, k)), w, floats[c[5]].reshape((n, w.shape[0])), threads)
    elif op == MATMUL_F32:  # x, n, k, w, m, out
        n, k, m = c[2], c[3], c[5]
        matmul_f32(
            floats[c[1]].reshape((n, k)),
            floats[c[4]].reshape((m, k)),
            floats[c[6]].reshape((n, m)),
            threads,
        )
    return True


@njit(**EXACT)
def _attention(c, p, floats, ints, threads):
    """q, n, n_head, head_dim, k_pool, slots, n_kv, v_pool, v_dim, table, block_size, seq_ids,
    positions, window, out; params: scale, softcap."""
    n, n_head, n_kv, slots = c[2], c[3], c[7], c[6]
    q = floats[c[1]].reshape((n, n_head, c[4]))
    k_pool = floats[c[5]].reshape((slots, n_kv, c[4]))
    v_pool = floats[c[8]].reshape((slots, n_kv, c[9]))
    positions = ints[c[13]][0]
    n_keys, n_split, n_chunks = attention_plan(n, n_head, n_kv, c[4], positions, threads)
    attention_paged(
        q,
        k_pool,
        v_pool,
        ints[c[10]],
        c[11],
        ints[c[12]][0],
        positions,
        np.float32(p[0]),
        c[14],
        np.float32(p[1]),
        floats[c[15]].reshape((n, n_head, c[9])),
        n_keys,
        n_split,
        n_chunks,
    )


@njit(**EXACT)
def _matmul_q16(c, p, floats, weights, threads):
    """x, n, k, then for each of three weights: code, kind, w, out (an unused one has no rows),
    then the norm weight (empty: none); params: the norm's eps."""
    n, k = c[2], c[3]
    codes = np.empty(3, np.int64)
    kinds = np.empty(3, np.int64)
    for j in range(3):
        codes[j] = c[4 + 4 * j]
        kinds[j] = c[5 + 4 * j]
    w0, w1, w2 = weights[c[6]], weights[c[10]], weights[c[14]]
    matmul_q16(floats[c[1]].reshape((n, k)), floats[c[16]], np.float32(p[0]), codes, kinds,
               w0, floats[c[7]].reshape((n, w0.shape[0])),
               w1, floats[c[11]].reshape((n, w1.shape[0])),
               w2, floats[c[15]].reshape((n, w2.shape[0])), threads)  # fmt: skip


@njit(**EXACT)
def _rope_write_kv(c, p, floats, ints):
    """q, n, n_head, head_dim, k, n_kv, v, v_dim, positions, n_rot, neox, freq_factors, has_ff,
    k_pool, v_pool, n_slots, slots; params: base, freq_scale."""
    n, n_kv, head_dim, v_dim, n_slots = c[2], c[6], c[4], c[8], c[16]
    return rope_write_kv(
        floats[c[1]].reshape((n, c[3], head_dim)),
        floats[c[5]].reshape((n, n_kv, head_dim)),
        floats[c[7]].reshape((n, n_kv, v_dim)),
        ints[c[9]][0],
        c[10],
        np.float32(p[0]),
        c[11] != 0,
        floats[c[12]],
        c[13] != 0,
        np.float32(p[1]),
        floats[c[14]].reshape((n_slots, n_kv, head_dim)),
        floats[c[15]].reshape((n_slots, n_kv, v_dim)),
        ints[c[17]][0],
    )
