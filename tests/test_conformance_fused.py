"""The fused ops on every backend that offers them (tests/conformance_fused.py), and the
reference's own definition of them."""

from __future__ import annotations

import numpy as np
import pytest
from conformance_fused import check_rms_norm_matmuls_q16, check_rope_write_kv

from realm.backend import RopeMode
from realm.errors import BackendArgumentError
from realm.gguf.types import GGMLType
from realm.quants import SUPPORTED_TYPES
from realm.testing import random_quant_tensor

QTYPES = sorted(SUPPORTED_TYPES)
ROPE_CASES = [  # n, n_head, n_kv, head_dim, v_dim, n_rot, mode, freq_factors
    (1, 9, 3, 64, 64, 64, RopeMode.NEOX, False),  # a SmolLM2 decode token
    (5, 4, 1, 256, 256, 256, RopeMode.NEOX, True),  # gemma-3's heads, a prompt chunk
    (3, 8, 2, 32, 16, 24, RopeMode.NORMAL, False),  # partial rotation, a smaller value head
]


def test_reference_rms_norm_matmuls_q16_is_its_definition(reference, rng):
    """The reference's fused op against rms_norm and matmul_q16 written out here."""
    x = rng.standard_normal((3, 64)).astype(np.float32)
    norm = rng.uniform(0.5, 1.5, 64).astype(np.float32)
    w = reference.upload_quant(random_quant_tensor(GGMLType.Q4_0, (5, 64), rng), GGMLType.Q4_0, (5, 64))
    out = np.empty((3, 5), np.float32)
    reference.rms_norm_matmuls_q16(x, norm, 1e-5, [w], [out])
    normed = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + np.float32(1e-5)) * norm
    expected = np.empty((3, 5), np.float32)
    reference.matmul_q16(normed.astype(np.float32), w, expected)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    up = reference.upload_quant(random_quant_tensor(GGMLType.Q8_0, (5, 64), rng), GGMLType.Q8_0, (5, 64))
    gate_out, up_out = np.empty((3, 5), np.float32), np.empty((3, 5), np.float32)
    reference.rms_norm_matmuls_q16(x, norm, 1e-5, [w, up], [gate_out, up_out], gated="geglu")
    np.testing.assert_allclose(up_out, _matmul_q16(reference, normed, up), rtol=1e-4, atol=1e-4)
    gelu = 0.5 * out * (1 + np.tanh(0.7978845608 * (out + 0.044715 * out**3)))
    np.testing.assert_allclose(gate_out, gelu * up_out, rtol=1e-5, atol=1e-6)


def _matmul_q16(reference, x, w):
    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    reference.matmul_q16(x.astype(np.float32), w, out)
    return out


@pytest.mark.parametrize("n", [1, 2, 6])
def test_rms_norm_matmuls_q16(backend, reference, rng, n):
    supported = [t for t in QTYPES if backend.supports("rms_norm_matmuls_q16", t)]
    assert set(supported) <= {t for t in QTYPES if backend.supports("matmuls_q16", t)}
    if backend.name == "cpu":  # the cpu backend offers it wherever it offers matmuls_q16
        assert supported == [t for t in QTYPES if backend.supports("matmuls_q16", t)]
    if not supported:
        return
    mixed = [supported[0], supported[-1], supported[len(supported) // 2]]
    check_rms_norm_matmuls_q16(backend, reference, rng, mixed, n=n, rows=[67, 5, 1], k=512)
    check_rms_norm_matmuls_q16(backend, reference, rng, mixed[:1], n=n, rows=[130], k=256)
    for gated in ("swiglu", "geglu"):
        check_rms_norm_matmuls_q16(backend, reference, rng, mixed[1:], n=n, rows=[70, 70], k=256, gated=gated)


@pytest.mark.parametrize("case", ROPE_CASES, ids=["decode", "gemma-chunk", "partial-normal"])
@pytest.mark.parametrize("reference_as_backend", [False, True], ids=["backend", "reference"])
def test_rope_write_kv(backend, reference, rng, case, reference_as_backend):
    be = reference if reference_as_backend else backend
    if backend.name == "cpu":
        assert backend.supports("rope_write_kv")
    if not reference_as_backend and not backend.supports("rope_write_kv"):
        return
    n, n_head, n_kv, head_dim, v_dim, n_rot, mode, ff = case
    check_rope_write_kv(be, reference, rng, n=n, n_head=n_head, n_kv=n_kv, head_dim=head_dim,
                        v_dim=v_dim, n_rot=n_rot, mode=mode, n_slots=16, freq_factors=ff,
                        freq_scale=0.5 if ff else 1.0)


BAD_SLOTS = [([0, 16], r"be in \[0, 16\) \(the pools' rows\), got 16 at position 1"), ([4, 4], "be distinct")]


@pytest.mark.parametrize("slots,message", BAD_SLOTS, ids=["outside", "repeated"])
@pytest.mark.parametrize("reference_as_backend", [False, True], ids=["backend", "reference"])
def test_rope_write_kv_refuses_bad_slots_before_writing(backend, reference, rng, slots, message,
                                                        reference_as_backend):
    be = reference if reference_as_backend else backend
    if not be.supports("rope_write_kv") and not reference_as_backend:
        return
    shapes = ((2, 4, 8), (2, 2, 8), (2, 2, 8), (16, 2, 8), (16, 2, 8))  # q, k, v, the pools
    host = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    dev = [be.upload(h) for h in host]
    with pytest.raises(BackendArgumentError, match=rf"^rope_write_kv: slots must {message}"):
        be.rope_write_kv(*dev[:3], be.upload(np.array([3, 4], np.int32)), 8, 10000.0, RopeMode.NEOX,
                         dev[3], dev[4], be.upload(np.array(slots, np.int32)))
    for name, d, h in zip(("q", "k", "v", "k_pool", "v_pool"), dev, host, strict=True):
        assert np.array_equal(be.download(d), h), f"{name} was written by a refused call"
