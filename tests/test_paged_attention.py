"""The paged KV ops: ``set_rows`` and ``attention_paged``.

The numpy reference is checked against the dense ``attention`` op (the definition it extends):
sequences of different lengths, scattered over a pool through shuffled block tables, mixed in
one batch, give each token what dense attention over its own sequence gives. Every other
backend is then checked against the reference, case by case.
"""

from __future__ import annotations

import numpy as np
import pytest

from realm.errors import BackendArgumentError

BLOCK = 4

# (n_head, n_kv_head, head_dim, window, softcap)
CASES = {
    "mha": (4, 4, 16, None, None),
    "gqa": (8, 2, 32, None, None),
    "window": (4, 2, 16, 5, None),
    "softcap": (4, 1, 8, None, 30.0),
    "odd-head-dim": (6, 3, 24, 7, 50.0),
}


def make_batch(rng, n_head, n_kv_head, head_dim, lengths=(9, 1, 14, 6), new=(3, 1, 1, 6)):
    """Sequences of ``lengths`` tokens whose last ``new`` tokens are queries in one batch.

    Returns the dense caches of each sequence, the pool arrays, the block table, and the
    batch's q / seq_ids / positions.
    """
    max_blocks = -(-max(lengths) // BLOCK) + 1
    n_blocks = sum(-(-n // BLOCK) for n in lengths) + 3  # spare blocks stay garbage
    order = rng.permutation(n_blocks)  # sequences' blocks land anywhere in the pool
    k_pool = rng.standard_normal((n_blocks * BLOCK, n_kv_head, head_dim)).astype(np.float32)
    v_pool = rng.standard_normal((n_blocks * BLOCK, n_kv_head, head_dim)).astype(np.float32)
    table = np.full((len(lengths), max_blocks), -1, np.int32)  # unused entries hold junk
    dense, q_rows, seq_ids, positions = [], [], [], []
    taken = 0
    for s, (n, n_new) in enumerate(zip(lengths, new, strict=True)):
        nb = -(-n // BLOCK)
        table[s, :nb] = order[taken : taken + nb]
        taken += nb
        slots = table[s, np.arange(n) // BLOCK] * BLOCK + np.arange(n) % BLOCK
        dense.append((k_pool[slots].copy(), v_pool[slots].copy(), n - n_new))
        for p in range(n - n_new, n):
            q_rows.append(rng.standard_normal((n_head, head_dim)).astype(np.float32))
            seq_ids.append(s)
            positions.append(p)
    q = np.stack(q_rows)
    return dense, k_pool, v_pool, table, q, np.array(seq_ids, np.int32), np.array(positions, np.int32)


@pytest.mark.parametrize("case", CASES)
def test_reference_equals_dense_attention_per_sequence(reference, rng, case):
    n_head, n_kv_head, head_dim, window, softcap = CASES[case]
    dense, k_pool, v_pool, table, q, seq_ids, positions = make_batch(rng, n_head, n_kv_head, head_dim)
    out = np.empty_like(q)
    reference.attention_paged(q, k_pool, v_pool, table, BLOCK, seq_ids, positions, 0.25, out,
                              window=window, softcap=softcap)
    for s, (k, v, n_past) in enumerate(dense):
        rows = np.flatnonzero(seq_ids == s)
        expected = np.empty((len(rows), n_head, head_dim), np.float32)
        reference.attention(q[rows], k, v, n_past, 0.25, expected, window=window, softcap=softcap)
        np.testing.assert_allclose(out[rows], expected, rtol=2e-5, atol=2e-6)


def test_reference_set_rows_scatters(reference, rng):
    dst = np.zeros((10, 2, 3), np.float32)
    src = rng.standard_normal((3, 2, 3)).astype(np.float32)
    reference.set_rows(src, dst, np.array([7, 0, 4], np.int32))
    np.testing.assert_array_equal(dst[[7, 0, 4]], src)
    assert not dst[[1, 2, 3, 5, 6, 8, 9]].any()


@pytest.mark.parametrize(
    "rows, match",
    [([0, 10, 1], "rows must be in"), ([1, 1, 2], "distinct"), ([0, 1], "rows must have shape")],
)
def test_reference_set_rows_refuses_bad_rows(reference, rows, match):
    with pytest.raises(BackendArgumentError, match=match):
        reference.set_rows(np.ones((3, 2), np.float32), np.zeros((10, 2), np.float32),
                           np.array(rows, np.int32))


def test_reference_refuses_reads_outside_the_pool(reference, rng):
    dense, k_pool, v_pool, table, q, seq_ids, positions = make_batch(rng, 4, 2, 8)
    out = np.empty_like(q)
    bad = table.copy()
    bad[seq_ids[0], 0] = len(k_pool) // BLOCK  # a block id past the pool, where token 0 reads
    with pytest.raises(BackendArgumentError, match="block_table"):
        reference.attention_paged(q, k_pool, v_pool, bad, BLOCK, seq_ids, positions, 1.0, out)
    with pytest.raises(BackendArgumentError, match="seq_ids"):
        reference.attention_paged(q, k_pool, v_pool, table, BLOCK, seq_ids + 10, positions, 1.0, out)
    with pytest.raises(BackendArgumentError, match="positions"):
        reference.attention_paged(q, k_pool, v_pool, table, BLOCK, seq_ids, positions + 1000, 1.0, out)
