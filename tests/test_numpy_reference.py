"""The numpy reference backend against independent math (float64, other formulations).

The conformance suite compares other backends with this one, so this file checks the
reference itself: dequantization against gguf-py, rope against complex rotation,
attention against a plain softmax loop, and the rest against float64 formulas.
"""

from __future__ import annotations

import math
import tracemalloc

import gguf
import gguf.quants
import numpy as np
import pytest

from realm.backend import RopeMode
from realm.errors import BackendUnavailableError, RealmError, UnsupportedQuantError
from realm.gguf.types import GGMLType, type_traits
from realm.quants import SUPPORTED_TYPES, dequantize
from realm.testing import random_quant_tensor
from realm_numpy import DEQUANT_CHUNK_ROWS, NumpyBackend

NUMPY_CAST = {"F64", "I8", "I16", "I32", "I64"}  # converted by realm itself, not by gguf
GGUF_DECODED = sorted(t for t in SUPPORTED_TYPES if t.name not in NUMPY_CAST)


@pytest.fixture(scope="module")
def be():
    return NumpyBackend()


def quant(be, qtype, shape, rng):
    return be.upload_quant(random_quant_tensor(qtype, shape, rng), qtype, shape, name="w")


# ----------------------------------------------------------------------------- dequantize


@pytest.mark.parametrize("qtype", GGUF_DECODED, ids=lambda t: t.name)
@pytest.mark.parametrize("rows,blocks", [(5, 3), (1000, 2)], ids=["small", "regrouped"])
def test_dequantize_matches_gguf(rng, qtype, rows, blocks):
    """Bit-exact against gguf-py decoding the tensor row by row (the large case is
    decoded in regrouped batches with a remainder, see realm.quants._decode_blocks)."""
    shape = (rows, blocks * type_traits(qtype).block_size)
    raw = random_quant_tensor(qtype, shape, rng)
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype.name])
    got = dequantize(raw, qtype, shape)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.isfinite(got).all()
    assert np.array_equal(got, expected.reshape(shape), equal_nan=True)


@pytest.mark.parametrize(
    "qtype,dtype",
    [(GGMLType.F32, "<f4"), (GGMLType.F16, "<f2"), (GGMLType.F64, "<f8"), (GGMLType.I8, "i1"),
     (GGMLType.I16, "<i2"), (GGMLType.I32, "<i4"), (GGMLType.I64, "<i8")],
    ids=lambda v: getattr(v, "name", v),
)
def test_dequantize_plain_types_round_trip(rng, qtype, dtype):
    values = (rng.standard_normal((4, 6)) * 50).astype(dtype)
    got = dequantize(values.view(np.uint8), qtype, (4, 6))
    assert np.array_equal(got, values.astype(np.float32))


def test_dequantize_bf16_is_the_top_half_of_float32():
    values = np.array([1.0, -2.5, np.inf, np.nan, 3.0e38, -1.0e-38], np.float32)
    raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    truncated = (values.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    assert np.array_equal(dequantize(raw, GGMLType.BF16, (6,)), truncated, equal_nan=True)


def test_dequantize_q8_0_by_hand():
    block = np.zeros(34, np.uint8)
    block[0:2] = np.array([0.5], "<f2").view(np.uint8)
    block[2:] = np.arange(-16, 16, dtype=np.int8).view(np.uint8)
    assert dequantize(block, GGMLType.Q8_0, (32,)).tolist() == [0.5 * i for i in range(-16, 16)]


def test_unknown_type_names_tensor_and_type():
    with pytest.raises(UnsupportedQuantError, match=r"'blk\.0\.attn_q\.weight'.*Q8_K"):
        dequantize(np.zeros(292, np.uint8), GGMLType.Q8_K, (256,), name="blk.0.attn_q.weight")


def test_wrong_byte_count_is_reported():
    with pytest.raises(RealmError, match=r"'w'.*needs 36 bytes.*got 35"):
        dequantize(np.zeros(35, np.uint8), GGMLType.Q4_0, (2, 32), name="w")
    with pytest.raises(RealmError, match="not a multiple of the block size 32"):
        dequantize(np.zeros(18, np.uint8), GGMLType.Q4_0, (16,), name="w")


# ----------------------------------------------------------------------------- weights ops


@pytest.mark.parametrize("qtype", [GGMLType.Q4_1, GGMLType.Q6_K, GGMLType.F16], ids=lambda t: t.name)
def test_matmul_is_x_times_dequantized_w(be, rng, qtype):
    block = type_traits(qtype).block_size
    shape = (DEQUANT_CHUNK_ROWS + 3 if block == 32 else 19, 2 * max(block, 32))
    w = quant(be, qtype, shape, rng)
    x = rng.standard_normal((3, shape[1])).astype(np.float32)
    out = be.empty((3, shape[0]))
    be.matmul(x, w, out)
    w64 = gguf.quants.dequantize(w.data.reshape(shape[0], -1),
                                 gguf.GGMLQuantizationType[qtype.name]).astype(np.float64)
    expected = x.astype(np.float64) @ w64.T
    assert np.allclose(out, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_matmul_never_holds_the_whole_dequantized_weight(be, rng):
    rows, cols = 8 * DEQUANT_CHUNK_ROWS, 256  # gguf needs ~3 chunks of scratch
    w = quant(be, GGMLType.Q8_0, (rows, cols), rng)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    out = be.empty((1, rows))
    tracemalloc.start()
    be.matmul(x, w, out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < rows * cols * 4 / 2, f"peak {peak} bytes for a {rows}x{cols} weight"


def test_get_rows_decodes_only_requested_rows(be, rng):
    rows, cols = 20000, 256
    w = quant(be, GGMLType.Q4_K, (rows, cols), rng)
    ids = np.array([19999, 3, 3], np.int32)
    out = be.empty((3, cols))
    tracemalloc.start()
    be.get_rows(w, ids, out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100_000
    full = dequantize(w.data, GGMLType.Q4_K, (rows, cols))
    assert np.array_equal(out, full[ids])


def test_get_rows_rejects_out_of_range_ids(be, rng):
    w = quant(be, GGMLType.Q8_0, (10, 32), rng)
    with pytest.raises(RealmError, match=r"'w' \(10 rows\): id 10 at position \d+, out of range"):
        be.get_rows(w, np.array([1, 10], np.int32), be.empty((2, 32)))


# ----------------------------------------------------------------------------- activations


def rope_complex(x, positions, n_rot, base, mode, freq_factors=None, freq_scale=1.0):
    """Rope as multiplication of complex pairs by exp(i * theta), in float64."""
    x = x.astype(np.float64)
    half = n_rot // 2
    inv_freq = base ** (-2.0 * np.arange(half) / n_rot)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors
    theta = positions[:, None].astype(np.float64) * freq_scale * inv_freq  # [n, half]
    rotation = np.exp(1j * theta)[:, None, :]
    if mode == RopeMode.NORMAL:
        idx_re, idx_im = np.arange(0, n_rot, 2), np.arange(1, n_rot, 2)
    else:
        idx_re, idx_im = np.arange(half), np.arange(half, n_rot)
    z = (x[..., idx_re] + 1j * x[..., idx_im]) * rotation
    out = x.copy()
    out[..., idx_re], out[..., idx_im] = z.real, z.imag
    return out


@pytest.mark.parametrize("mode", [RopeMode.NORMAL, RopeMode.NEOX], ids=["normal", "neox"])
@pytest.mark.parametrize("n_rot,freq_factors,freq_scale", [(64, False, 1.0), (32, True, 0.5)])
def test_rope_matches_complex_rotation(be, rng, mode, n_rot, freq_factors, freq_scale):
    x = rng.standard_normal((6, 3, 64)).astype(np.float32)
    positions = np.array([0, 1, 2, 17, 300, 1000], np.int32)
    ff = rng.uniform(1, 4, n_rot // 2).astype(np.float32) if freq_factors else None
    out = be.empty(x.shape)
    be.rope(x, positions, n_rot, 10000.0, mode, out, freq_factors=ff, freq_scale=freq_scale)
    expected = rope_complex(x, positions, n_rot, 10000.0, mode, ff, freq_scale)
    assert np.abs(out - expected).max() < 2e-3  # float32 angles near 1000 rad: ~1e-4 off
    assert np.abs(out[:4] - expected[:4]).max() < 1e-5  # small positions: float32 rounding only
    assert np.array_equal(out[..., n_rot:], x[..., n_rot:])


def test_rope_position_zero_is_identity_and_in_place_works(be, rng):
    x = rng.standard_normal((1, 2, 8)).astype(np.float32)
    y = x.copy()
    be.rope(y, np.zeros(1, np.int32), 8, 10000.0, RopeMode.NEOX, y)
    assert np.array_equal(x, y)


def attention_loop(q, k, v, n_past, scale, window=None, softcap=None):
    """One query and one head at a time: scores, mask, softmax, weighted sum (float64)."""
    n, n_head, _ = q.shape
    group = n_head // k.shape[1]
    out = np.zeros((n, n_head, v.shape[2]))
    for i in range(n):
        pos = n_past + i
        for h in range(n_head):
            kv = h // group
            keys = [j for j in range(pos + 1) if window is None or pos - j < window]
            s = [scale * float(np.dot(q[i, h].astype(np.float64), k[j, kv])) for j in keys]
            if softcap is not None:
                s = [softcap * math.tanh(v_ / softcap) for v_ in s]
            top = max(s)
            w = [math.exp(v_ - top) for v_ in s]
            total = sum(w)
            for wj, j in zip(w, keys, strict=True):
                out[i, h] += wj / total * v[j, kv].astype(np.float64)
    return out


@pytest.mark.parametrize(
    "n,n_past,n_head,n_kv,window,softcap",
    [(4, 0, 2, 2, None, None), (3, 5, 4, 2, None, None), (5, 6, 4, 1, 3, None),
     (2, 3, 2, 1, None, 2.0)],
    ids=["causal", "gqa_n_past", "window", "softcap"],
)
def test_attention_matches_softmax_loop(be, rng, n, n_past, n_head, n_kv, window, softcap):
    hd, ctx = 16, n_past + n + 3
    q = rng.standard_normal((n, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((ctx, n_kv, hd)).astype(np.float32)
    v = rng.standard_normal((ctx, n_kv, hd)).astype(np.float32)
    out = be.empty(q.shape)
    be.attention(q, k, v, n_past, 0.5, out, window=window, softcap=softcap)
    expected = attention_loop(q, k, v, n_past, 0.5, window, softcap)
    assert np.abs(out - expected).max() < 1e-5


def test_rms_norm_matches_float64(be, rng):
    x = (rng.standard_normal((5, 96)) * [[1e-3], [1], [10], [100], [1e-2]]).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 96).astype(np.float32)
    out = be.empty(x.shape)
    be.rms_norm(x, w, 1e-5, out)
    x64 = x.astype(np.float64)
    expected = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-5) * w
    assert np.allclose(out, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("op", ["swiglu", "geglu"])
def test_gated_activations_match_float64(be, rng, op):
    gate = np.concatenate([rng.standard_normal(200) * 4, [-200.0, -30.0, 0.0, 30.0]])
    gate = gate.astype(np.float32)[None, :]
    up = rng.standard_normal(gate.shape).astype(np.float32)
    out = be.empty(gate.shape)
    getattr(be, op)(gate, up, out)
    g = gate.astype(np.float64)
    if op == "swiglu":
        act = g / (1 + np.exp(-g))
    else:
        act = 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
    assert np.allclose(out, act * up, rtol=1e-5, atol=1e-6)


def test_add_broadcasts_one_row_and_rejects_others(be, rng):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    out = be.empty(a.shape)
    be.add(a, b, out)
    assert np.array_equal(out, a + b[None, :])
    with pytest.raises(RealmError, match="one row of 6"):
        be.add(a, np.ones((2, 6), np.float32), out)


def test_copy_rows_leaves_other_rows_and_checks_bounds(be, rng):
    dst = np.zeros((6, 2), np.float32)
    be.copy_rows(np.ones((2, 2), np.float32), dst, 3)
    assert dst.sum(axis=1).tolist() == [0, 0, 0, 2, 2, 0]
    with pytest.raises(RealmError, match="do not fit"):
        be.copy_rows(np.ones((2, 2), np.float32), dst, 5)


# ----------------------------------------------------------------------------- memory, device


def test_upload_copies_and_download_copies(be):
    host = np.arange(4, dtype=np.float32)
    dev = be.upload(host)
    host[0] = 99
    assert be.download(dev)[0] == 0
    back = be.download(dev)
    back[1] = 99
    assert be.download(dev)[1] == 1


def test_upload_quant_keeps_raw_bytes_without_copy(be, rng):
    raw = random_quant_tensor(GGMLType.Q4_0, (3, 64), rng)
    w = be.upload_quant(raw, GGMLType.Q4_0, (3, 64), name="t")
    assert np.shares_memory(w.data, raw) and w.shape == (3, 64) and w.nbytes == raw.size
    with pytest.raises(RealmError, match=r"'t'.*needs 108 bytes"):
        be.upload_quant(raw[:, :-1], GGMLType.Q4_0, (3, 64), name="t")
    with pytest.raises(UnsupportedQuantError, match=r"'t'.*Q8_K"):
        be.upload_quant(np.zeros(292, np.uint8), GGMLType.Q8_K, (256,), name="t")


def test_probe_and_device_strings():
    a = NumpyBackend.probe()
    assert a.available and [d.device for d in a.devices] == ["numpy"]
    assert a.devices[0].kind == "cpu" and a.devices[0].memory_bytes > 2**20
    assert NumpyBackend("numpy").device == "numpy"
    for bad in ("numpy:1", "cpu"):
        with pytest.raises(BackendUnavailableError, match="one device"):
            NumpyBackend(bad)


def test_supports():
    be = NumpyBackend()
    assert be.supports("matmul", GGMLType.IQ2_XXS) and be.supports("rope")
    assert not be.supports("matmul", GGMLType.Q8_K)
    assert not be.supports("rope", GGMLType.Q4_0) and not be.supports("conv2d")
