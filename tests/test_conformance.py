"""Every backend against the numpy reference, op by op (see tests/conformance.py).

A new backend joins by registering its entry point: the `backend` fixture in conftest.py
parametrizes over every registered backend except numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
from conformance import (
    CORE_QTYPES,
    check_add,
    check_attention,
    check_copy_rows,
    check_dequantize,
    check_dequantize_raw,
    check_gated,
    check_get_rows,
    check_matmul,
    check_matmul_q16,
    check_matmuls_q16,
    check_rms_norm,
    check_rope,
    check_scale,
)
from conftest import REFERENCE, load_backend, required_backends

from realm.backend import OPS, RopeMode, registered_backends
from realm.gguf.types import GGMLType, type_traits
from realm.quants import SUPPORTED_TYPES

QTYPES = sorted(SUPPORTED_TYPES)
QTYPE_IDS = [t.name for t in QTYPES]


def require_support(backend, op: str, qtype: GGMLType | None = None) -> None:
    """Skip an op/type the backend declines, unless every backend must run it."""
    if backend.supports(op, qtype):
        return
    what = f"{op} on {qtype.name}" if qtype is not None else op
    if qtype is None or qtype in CORE_QTYPES:
        pytest.fail(f"backend {backend.name!r} does not support {what}, which every backend must")
    pytest.skip(f"backend {backend.name!r} does not support {what}")


def test_required_backends_are_available():
    """Every backend named in $REALM_REQUIRE_BACKENDS (the reference included) can run."""
    for name in sorted(required_backends()):
        assert load_backend(name).name == name


def test_reference_is_registered_like_any_backend():
    entry = registered_backends().get(REFERENCE)
    assert entry is not None, f"the {REFERENCE!r} entry point is missing (is realm installed?)"
    assert entry.availability().available
    assert entry.load_class().name == REFERENCE


def test_backend_supports_every_op(backend):
    for op in OPS:
        require_support(backend, op)
    assert not backend.supports("no_such_op")


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("qtype", QTYPES, ids=QTYPE_IDS)
@pytest.mark.parametrize("rows,blocks", [(1, 1), (37, 3)], ids=["1x1block", "37x3blocks"])
def test_dequantize(backend, reference, rng, qtype, rows, blocks):
    require_support(backend, "dequantize", qtype)
    block = type_traits(qtype).block_size
    cols = blocks * block if block > 1 else 45 * blocks
    check_dequantize(backend, reference, rng, qtype, (rows, cols))


@pytest.mark.parametrize("qtype", [GGMLType.F32, GGMLType.F16, GGMLType.BF16], ids=lambda t: t.name)
def test_dequantize_special_floats(backend, reference, qtype):
    """inf, -inf, NaN, -0.0 and subnormals decode to the same bits on every backend."""
    require_support(backend, "dequantize", qtype)
    values = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-40, -3e-39, 65504.0], np.float32)
    if qtype == GGMLType.F32:
        raw = values.view(np.uint8)
    elif qtype == GGMLType.F16:
        raw = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 6e-8, -3e-5, 65504.0],
                       np.float16).view(np.uint8)
    else:
        raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    check_dequantize_raw(backend, reference, raw, qtype, (1, 8))


@pytest.mark.parametrize("qtype", QTYPES, ids=QTYPE_IDS)
@pytest.mark.parametrize("n", [1, 7], ids=["decode", "prefill"])
def test_matmul_quant(backend, reference, rng, qtype, n):
    require_support(backend, "matmul", qtype)
    block = type_traits(qtype).block_size
    k_blocks = 3 if block >= 128 else 11  # k = several blocks of every kind
    check_matmul(backend, reference, rng, qtype, n=n, m=67, k_blocks=k_blocks)


@pytest.mark.parametrize(
    "qtype,n,m,k_blocks",
    [
        (GGMLType.Q4_0, 1, 1, 1),  # one row, one block
        (GGMLType.Q8_0, 33, 4099, 2),  # more rows than one dequantization chunk
        (GGMLType.Q4_K, 1, 5, 12),  # a long row (k = 3072)
        (GGMLType.Q6_K, 64, 96, 3),  # a prefill batch
    ],
    ids=["1x1", "many_rows", "long_k", "batch64"],
)
def test_matmul_sizes(backend, reference, rng, qtype, n, m, k_blocks):
    require_support(backend, "matmul", qtype)
    check_matmul(backend, reference, rng, qtype, n=n, m=m, k_blocks=k_blocks)


def test_matmul_q16_where_supported(backend, reference, rng):
    """``matmul_q16`` (optional) on every type the backend says it runs, decode and prefill.

    Which types a backend must run in 8 bits is its own test's business (the ``cpu`` one:
    test_numba_backend); here a backend that says yes must be right.
    """
    supported = [t for t in QTYPES if backend.supports("matmul_q16", t)]
    for qtype in supported:
        k_blocks = 3 if type_traits(qtype).block_size >= 128 else 11
        for n in (1, 7):
            check_matmul_q16(backend, reference, rng, qtype, n=n, m=67, k_blocks=k_blocks)
    if supported:  # one call past the tiles' edges and past the inline/unpacked split
        check_matmul_q16(backend, reference, rng, supported[0], n=33, m=4099, k_blocks=2)
    assert not backend.supports("matmul_q16", GGMLType.F32)  # float weights multiply float32


def test_matmuls_q16_where_supported(backend, reference, rng):
    """``matmuls_q16`` (optional): one x by 1-3 weights, each as ``matmul_q16`` would give it."""
    supported = [t for t in QTYPES if backend.supports("matmuls_q16", t)]
    assert set(supported) <= {t for t in QTYPES if backend.supports("matmul_q16", t)}
    if supported:
        mixed = [supported[0], supported[-1], supported[len(supported) // 2]]
        for n in (1, 6):
            check_matmuls_q16(backend, reference, rng, mixed, n=n, rows=[67, 5, 1], k=512)
            check_matmuls_q16(backend, reference, rng, mixed[:2], n=n, rows=[8, 130], k=256)
        check_matmuls_q16(backend, reference, rng, mixed[:1], n=3, rows=[9], k=256)


@pytest.mark.parametrize("n,m", [(1, 13), (9, 70)], ids=["decode", "prefill"])
def test_matmul_float_array(backend, reference, rng, n, m):
    check_matmul(backend, reference, rng, None, n=n, m=m, k_blocks=5)


@pytest.mark.parametrize("qtype", [None, *QTYPES], ids=["float32_array", *QTYPE_IDS])
@pytest.mark.parametrize(
    "n_rows,ids",
    [(1, [0]), (300, [299, 0, 17, 17, 150]), (45, list(range(44, -1, -1)))],
    ids=["single", "repeats_and_ends", "all_reversed"],
)
def test_get_rows(backend, reference, rng, qtype, n_rows, ids):
    if qtype is not None:
        require_support(backend, "get_rows", qtype)
    check_get_rows(backend, reference, rng, qtype, n_rows, ids)


# ----------------------------------------------------------------------------- activations


@pytest.mark.parametrize(
    "shape,eps", [((1, 64), 1e-5), ((7, 576), 1e-6), ((5, 4, 64), 1e-6), ((3, 1), 1e-5)],
    ids=["1row", "rows", "per_head", "d1"],
)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "in_place"])
def test_rms_norm(backend, reference, rng, shape, eps, in_place):
    check_rms_norm(backend, reference, rng, shape, eps, in_place)


ROPE_CASES = {
    "full": dict(n=9, n_head=3, head_dim=64, n_rot=64, max_pos=200),
    "decode": dict(n=1, n_head=4, head_dim=32, n_rot=32, max_pos=100),
    "partial_rot": dict(n=5, n_head=2, head_dim=128, n_rot=64, max_pos=60),
    "odd_rot": dict(n=6, n_head=3, head_dim=80, n_rot=18, max_pos=30),
    "far_positions": dict(n=4, n_head=2, head_dim=64, n_rot=64, max_pos=8000),
}


@pytest.mark.parametrize("mode", [RopeMode.NORMAL, RopeMode.NEOX], ids=["normal", "neox"])
@pytest.mark.parametrize("case", list(ROPE_CASES))
@pytest.mark.parametrize(
    "freq_factors,freq_scale,in_place",
    [(False, 1.0, False), (True, 1.0, True), (False, 0.25, True)],
    ids=["plain", "freq_factors_in_place", "freq_scale_in_place"],
)
def test_rope(backend, reference, rng, mode, case, freq_factors, freq_scale, in_place):
    check_rope(backend, reference, rng, mode=mode, freq_factors=freq_factors,
               freq_scale=freq_scale, in_place=in_place, **ROPE_CASES[case])


ATTENTION_CASES = {
    "prefill_causal": dict(n=7, n_past=0, n_head=4, n_kv_head=4, head_dim=32, ctx=16),
    "decode": dict(n=1, n_past=12, n_head=4, n_kv_head=4, head_dim=64, ctx=20),
    "gqa": dict(n=5, n_past=9, n_head=8, n_kv_head=2, head_dim=64, ctx=17),
    "mqa": dict(n=3, n_past=4, n_head=6, n_kv_head=1, head_dim=48, ctx=9),
    "window": dict(n=9, n_past=6, n_head=4, n_kv_head=2, head_dim=32, ctx=40, window=4),
    "window_decode": dict(n=1, n_past=30, n_head=4, n_kv_head=2, head_dim=32, ctx=31, window=8),
    "softcap": dict(n=6, n_past=3, n_head=4, n_kv_head=2, head_dim=64, ctx=12, softcap=5.0),
    "head_dim_256": dict(n=4, n_past=2, n_head=2, n_kv_head=1, head_dim=256, ctx=8),
    "first_token": dict(n=1, n_past=0, n_head=2, n_kv_head=2, head_dim=16, ctx=4),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention(backend, reference, rng, case):
    check_attention(backend, reference, rng, **ATTENTION_CASES[case])


@pytest.mark.parametrize("op", ["swiglu", "geglu"])
@pytest.mark.parametrize(
    "shape,spread", [((1, 1), 1.0), ((7, 1536), 3.0), ((4, 100), 40.0)],
    ids=["1x1", "ffn", "saturating"],
)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "in_place"])
def test_gated_activation(backend, reference, rng, op, shape, spread, in_place):
    check_gated(backend, reference, rng, op, shape, spread, in_place)


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [((7, 576), (7, 576)), ((1, 33), (1, 33)), ((5, 96), (96,)), ((5, 96), (1, 96)),
     ((3, 4, 8), (3, 4, 8))],
    ids=["same", "1row", "bias_1d", "bias_row", "3d"],
)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "in_place"])
def test_add(backend, reference, rng, a_shape, b_shape, in_place):
    check_add(backend, reference, rng, a_shape, b_shape, in_place)


@pytest.mark.parametrize("shape,s", [((1, 5), 0.5), ((9, 640), 25.298221281347036), ((3, 7), -3.0)],
                         ids=["1row", "gemma_embd", "negative"])
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "in_place"])
def test_scale(backend, reference, rng, shape, s, in_place):
    check_scale(backend, reference, rng, shape, s, in_place)


@pytest.mark.parametrize(
    "n_dst,n_src,row_shape,start",
    [(10, 3, (2, 8), 0), (10, 1, (2, 8), 5), (10, 4, (1, 64), 6), (33, 33, (3, 5), 0)],
    ids=["start", "one_row", "end", "whole"],
)
def test_copy_rows(backend, reference, rng, n_dst, n_src, row_shape, start):
    check_copy_rows(backend, reference, rng, n_dst, n_src, row_shape, start)


# ----------------------------------------------------------------------------- the logits' check

# Bits of float32 values that are not finite: quiet and signalling NaNs of either sign, with
# payloads, and the two infinities; and finite ones next to them.
NONFINITE_BITS = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FBFFFFF, 0x7F800000, 0xFF800000]
FINITE_BITS = [0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80000000, 0x00000000, 0x3F800000]


def test_reference_count_nonfinite_is_its_definition(reference):
    bits = np.array([
        [0x7FC00000, 0x3F800000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x80000000],  # NaN 1 inf -inf max -0
        [0x00000001, 0x3F800000, 0x40000000, 0xFF7FFFFF, 0x00000000, 0x3F000000],  # all finite
        [0x7F800001, 0xFFFFFFFF, 0x7FBFFFFF, 0xFFC00000, 0x7FC00000, 0x7F800000],  # none finite
    ], np.uint32)  # fmt: skip
    out = np.full(3, -1, np.int32)
    reference.count_nonfinite(bits.view(np.float32), out)
    assert out.tolist() == [3, 0, 6]


@pytest.mark.parametrize("rows,d", [(1, 49152), (3, 1000), (8, 17), (2, 262144)],
                         ids=["smollm2_vocab", "3rows", "8x17", "gemma_vocab"])
def test_count_nonfinite(backend, reference, rng, rows, d):
    """Values planted at known places, among finite ones so large that their squares overflow."""
    if backend.name == "cpu":
        assert backend.supports("count_nonfinite")
    if not backend.supports("count_nonfinite"):  # optional: the model checks the downloaded logits
        pytest.skip(f"backend {backend.name!r} does not offer the optional count_nonfinite")
    x = (rng.standard_normal((rows, d)) * 1e30).astype(np.float32)
    bits = x.view(np.uint32)
    expected = []
    for r in range(rows):
        n = int(rng.integers(1, min(d, 40))) if r % 2 == 0 else 0  # odd rows stay finite
        at = rng.choice(d - 1, n, replace=False)
        bits[r, at] = rng.choice(NONFINITE_BITS, n)
        expected.append(n)
    bits[:, -1] = rng.choice(FINITE_BITS, rows)  # the last value (a vector loop's tail) finite too
    if rows > 2:
        bits[2, -1] = 0x7FC00000  # and a NaN alone in a tail
        expected[2] += 1
    out = backend.upload(np.full(rows, -1, np.int32))
    backend.count_nonfinite(backend.upload(x), out)
    assert backend.download(out).tolist() == expected
    want = np.full(rows, -1, np.int32)
    reference.count_nonfinite(x, want)
    assert want.tolist() == expected


def _bits_row(*values: int) -> np.ndarray:
    return np.array(values, np.uint32).view(np.float32)


# (row, the index np.argmax gives): first maxima, signed zeros, infinities, NaN anywhere.
ARGMAX_CASES = [
    (_bits_row(0x3F800000, 0x40000000, 0x40000000, 0x3F000000), 1),  # 1 2 2 .5: the first 2
    (_bits_row(0x80000000, 0x00000000, 0xBF800000), 0),  # -0 0 -1: -0 == 0, so the first
    (_bits_row(0xBF800000, 0x80000000, 0x00000000), 1),  # -1 -0 0
    (_bits_row(0xFF800000, 0xFF800000, 0xFF800000), 0),  # all -inf
    (_bits_row(0xFF7FFFFF, 0xFF800000, 0x80000001), 2),  # -max -inf -denormal
    (_bits_row(0x7F7FFFFF, 0x7F800000, 0x7F800000), 1),  # max +inf +inf
    (_bits_row(0x7F800000, 0x7FC00000, 0x3F800000), 1),  # +inf NaN 1: NaN stops it
    (_bits_row(0x3F800000, 0xFFC00000, 0x7FC00000), 1),  # a negative NaN counts as NaN
    (_bits_row(0x00000001, 0x00000000, 0x80000001), 0),  # denormals order as numbers
]


def test_reference_argmax_rows_is_its_definition(reference):
    for row, index in ARGMAX_CASES:
        out = np.full(1, -1, np.int32)
        reference.argmax_rows(row[None, :], out)
        assert out.tolist() == [index], row


def _argmax_rows_of(backend, x: np.ndarray) -> list[int]:
    out = backend.upload(np.full(len(x), -1, np.int32))
    backend.argmax_rows(backend.upload(x), out)
    return backend.download(out).tolist()


def _skip_without_argmax_rows(backend) -> None:
    if backend.name == "cpu":
        assert backend.supports("argmax_rows")
    if not backend.supports("argmax_rows"):  # optional: the model takes argmax of the downloaded logits
        pytest.skip(f"backend {backend.name!r} does not offer the optional argmax_rows")


def test_argmax_rows_edge_cases(backend):
    _skip_without_argmax_rows(backend)
    for row, index in ARGMAX_CASES:
        assert _argmax_rows_of(backend, row[None, :]) == [index], row


@pytest.mark.parametrize("rows,d", [(1, 49152), (3, 1000), (8, 17), (2, 262144)],
                         ids=["smollm2_vocab", "3rows", "8x17", "gemma_vocab"])
def test_argmax_rows(backend, rng, rows, d):
    """The first maximum wherever it falls: in a chunk's first or last value, in a vector
    loop's tail, repeated further on, behind a NaN."""
    _skip_without_argmax_rows(backend)
    x = rng.standard_normal((rows, d)).astype(np.float32)
    expected = []
    for r in range(rows):
        at = [0, d - 1, 255, 256, int(rng.integers(d))][r % 5] % d
        x[r, at] = 10.0
        later = np.arange(at + 1, d)
        if len(later) and r % 2:
            x[r, rng.choice(later, min(3, len(later)), replace=False)] = 10.0  # ties after it lose
        expected.append(at)
    if rows > 2:
        x[2, d // 2] = np.nan  # numpy's argmax stops at a NaN
        expected[2] = d // 2
    assert np.argmax(x, axis=1).tolist() == expected  # what the rows were built to give
    assert _argmax_rows_of(backend, x) == expected
