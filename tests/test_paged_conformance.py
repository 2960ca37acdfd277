"""Every backend's ``set_rows`` and ``attention_paged`` against the numpy reference.

Batch invariance: a token's attention output must not depend on which other tokens share the
call, so each case also runs every token alone and compares bit for bit on backends that
promise it (``BATCH_INVARIANT``).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_paged_attention import BLOCK, CASES, make_batch

from realm.errors import BackendArgumentError

# Backends whose attention_paged gives each token bit-identical output however the batch is made.
BATCH_INVARIANT = {"numpy", "cpu", "opencl"}


def _upload(backend, *arrays):
    return [backend.upload(a) for a in arrays]


@pytest.mark.parametrize("case", CASES)
def test_attention_paged_matches_the_reference(backend, reference, rng, case):
    n_head, n_kv_head, head_dim, window, softcap = CASES[case]
    _, k_pool, v_pool, table, q, seq_ids, positions = make_batch(rng, n_head, n_kv_head, head_dim)
    expected = np.empty_like(q)
    reference.attention_paged(q, k_pool, v_pool, table, BLOCK, seq_ids, positions, 0.25, expected,
                              window=window, softcap=softcap)
    dq, dk, dv, dt, ds, dp = _upload(backend, q, k_pool, v_pool, table, seq_ids, positions)
    out = backend.empty(q.shape)
    backend.attention_paged(dq, dk, dv, dt, BLOCK, ds, dp, 0.25, out, window=window, softcap=softcap)
    got = backend.download(out)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    if backend.name in BATCH_INVARIANT:
        for i in range(len(q)):  # the same token alone gives the same bits
            alone = backend.empty((1, *q.shape[1:]))
            one = _upload(backend, q[i : i + 1], seq_ids[i : i + 1], positions[i : i + 1])
            backend.attention_paged(one[0], dk, dv, dt, BLOCK, one[1], one[2], 0.25, alone,
                                    window=window, softcap=softcap)
            np.testing.assert_array_equal(backend.download(alone)[0], got[i])


def test_set_rows_matches_the_reference(backend, reference, rng):
    dst = rng.standard_normal((20, 2, 8)).astype(np.float32)
    src = rng.standard_normal((5, 2, 8)).astype(np.float32)
    rows = np.array([19, 3, 0, 7, 8], np.int32)
    expected = dst.copy()
    reference.set_rows(src, expected, rows)
    ddst = backend.upload(dst)
    backend.set_rows(backend.upload(src), ddst, backend.upload(rows))
    np.testing.assert_array_equal(backend.download(ddst), expected)


def test_bad_paged_arguments_are_refused_alike(backend, rng):
    _, k_pool, v_pool, table, q, seq_ids, positions = make_batch(rng, 4, 2, 8)
    dq, dk, dv, ds, dp = _upload(backend, q, k_pool, v_pool, seq_ids, positions)
    out = backend.empty(q.shape)
    bad = table.copy()
    bad[seq_ids[0], 0] = len(k_pool) // BLOCK
    with pytest.raises(BackendArgumentError, match="block_table"):
        backend.attention_paged(dq, dk, dv, backend.upload(bad), BLOCK, ds, dp, 1.0, out)
    with pytest.raises(BackendArgumentError, match="block_size"):
        backend.attention_paged(dq, dk, dv, backend.upload(table), 5, ds, dp, 1.0, out)
    with pytest.raises(BackendArgumentError, match="rows"):
        backend.set_rows(backend.upload(np.ones((2, 3), np.float32)), backend.empty((4, 3)),
                         backend.upload(np.array([0, 4], np.int32)))


def test_indices_changed_in_place_after_a_good_call_are_checked_again(backend, rng):
    """Each layer of a step passes the same indices: a backend may skip checking them again
    while they are unchanged, never once they changed."""
    _, k_pool, v_pool, table, q, seq_ids, positions = make_batch(rng, 4, 2, 8)
    dq, dk, dv, ds, dp = _upload(backend, q, k_pool, v_pool, seq_ids, positions)
    out = backend.empty(q.shape)
    host_table = table.copy()
    dt = backend.upload(host_table)
    backend.attention_paged(dq, dk, dv, dt, BLOCK, ds, dp, 1.0, out)
    backend.attention_paged(dq, dk, dv, dt, BLOCK, ds, dp, 1.0, out)  # the same: fine
    host_table[seq_ids[0], 0] = len(k_pool) // BLOCK  # one block past the pool
    if isinstance(dt, np.ndarray):  # host backends: the very array already checked, changed in place
        dt[...] = host_table
        bad = dt
    else:
        bad = backend.upload(host_table)
    with pytest.raises(BackendArgumentError, match="block_table"):
        backend.attention_paged(dq, dk, dv, bad, BLOCK, ds, dp, 1.0, out)
