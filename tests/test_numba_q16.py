"""The ``cpu`` backend's integer matmul: which types it runs, its rounding of activations, and
its two instruction sets giving the same bits.

What ``matmul_q16`` computes is checked against the reference in test_conformance.py, and
its batch invariance in test_batch_invariance_matmul.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from realm.errors import RealmError
from realm.gguf.types import GGMLType
from realm.quants.activations import quantize_q16
from realm.testing import random_quant_tensor

pytest.importorskip("numba")
from numba import njit  # noqa: E402

from realm_numba import NumbaBackend  # noqa: E402
from realm_numba.dot_ir import (  # noqa: E402
    dot_rows_intrinsic,
    dot_tile_intrinsic,
    unpack_intrinsic,
    unpacked_kind,
)
from realm_numba.gemm_q16 import quantize_rows  # noqa: E402
from realm_numba.int8_formats import FORMATS  # noqa: E402
from realm_numba.vector_ir import host_isa  # noqa: E402

# The formats of the models realm is measured on (and their siblings): all in integers.
INT8_TYPES = {
    GGMLType[n] for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")
}


def test_cpu_runs_the_common_formats_in_integers():
    be = NumbaBackend(n_threads=1)
    assert {t for t in GGMLType if be.supports("matmul_q16", t)} == INT8_TYPES
    assert {GGMLType(code) for code in FORMATS} == INT8_TYPES


def _quantize_on_cpu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quantize_rows' int16 blocks, scales and scaled sums."""
    n, k = x.shape
    xq = np.empty((n, k), np.int16)
    xd = np.empty((n, k // 32), np.float32)
    xs = np.empty((n, k // 32), np.float32)
    quantize_rows(x, xq, xd, xs)
    return xq, xd, xs


_special = st.sampled_from([0.0, -0.0, 0.5, -1.5, 2.5, 1e-30, -3e38, np.inf, -np.inf, np.nan])
_values = st.one_of(st.floats(-1e4, 1e4, width=32), st.floats(width=32), _special)


@settings(max_examples=300, deadline=None)
@given(
    arrays(
        np.float32, st.tuples(st.integers(1, 3), st.integers(1, 3).map(lambda b: 32 * b)), elements=_values
    )
)
def test_activations_round_as_the_reference_says(x):
    """Bit for bit: the same int16 and the same scale for every block, NaN and inf included."""
    xq, xd, xs = _quantize_on_cpu(x)
    q, d = quantize_q16(x)
    np.testing.assert_array_equal(xq, q)
    np.testing.assert_array_equal(xd.view(np.uint32), d.view(np.uint32))
    with np.errstate(invalid="ignore", over="ignore"):
        sums = d * q.reshape(*d.shape, 32).sum(axis=-1, dtype=np.int32).astype(np.float32)
    np.testing.assert_array_equal(xs, sums)


def test_a_subnormal_scale_keeps_the_largest_value():
    """With a subnormal ``d``, ``x / d`` rounds past 32767: both sides keep 32767 (no wrap)."""
    x = np.full((1, 32), 3.31815e-40, np.float32)
    xq, xd, _ = _quantize_on_cpu(x)
    q, d = quantize_q16(x)
    assert xq.tolist() == q.tolist() == [[32767] * 32]
    assert xd[0, 0] == d[0, 0] > 0


def test_ties_round_to_even():
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [32767.0, 0.5, 1.5, -2.5]  # d = 1: q = rint(x)
    xq, xd, _ = _quantize_on_cpu(x)
    assert xd[0, 0] == 1.0
    assert xq[0, :4].tolist() == [32767, 0, 2, -2]


def _kernels(isa: str):
    """A one-token, one-tile integer matmul built from dot_ir's kernels for ``isa``: both ways."""
    rows, tile, unpack = dot_rows_intrinsic(isa), dot_tile_intrinsic(isa), unpack_intrinsic(isa)

    @njit(cache=False)
    def run(code, kind, w, xq, xd, xs, out_inline, out_unpacked):
        nb = xd.shape[0]
        k = 32 * nb
        mn = np.zeros((4, nb), np.float32)
        q = np.zeros((4, k), np.int16)
        scv = np.zeros((4, 8 * nb), np.float32)
        rows(code, w, 0, w.shape[1], 4, xq, 0, xd, 0, xs, 0, nb, out_inline, 0, 1, 0)  # decode's way
        unpack(code, w, 0, w.shape[1], 4, nb, q, 0, scv, 0, mn, 0)
        tile(kind, q, 0, scv, 0, mn, 0, xq, 0, xd, 0, xs, 0, nb, out_unpacked, 0, 3, 1, k, 4)  # a pair, a row
        r, s = 3, 8 * nb  # the tile's last row alone
        tile(kind, q, r * k, scv, r * s, mn, r * nb, xq, 0, xd, 0, xs, 0, nb, out_unpacked, r, 1, 1, k, 4)

    return run


@pytest.mark.skipif(host_isa() != "avx2", reason="compares the AVX2 kernels with the generic ones")
@pytest.mark.parametrize("qtype", sorted(INT8_TYPES), ids=lambda t: t.name)
def test_avx2_and_generic_kernels_agree_bit_for_bit(qtype, rng):
    """Integer sums are exact and the float steps are the same IR, so any CPU gives these bits."""
    k = 512
    raw = random_quant_tensor(qtype, (4, k), rng).reshape(4, -1)
    x = (rng.standard_normal((1, k)) * 3).astype(np.float32)
    xq, xd, xs = _quantize_on_cpu(x)
    results = []
    for isa in ("avx2", "generic"):
        inline, unpacked = np.full(4, np.nan, np.float32), np.full(4, np.nan, np.float32)
        kind = unpacked_kind(FORMATS[int(qtype)])
        _kernels(isa)(int(qtype), kind, raw, xq[0], xd[0], xs[0], inline, unpacked)
        results += [inline, unpacked]
    assert np.isfinite(results[0]).all()
    for other in results[1:]:
        np.testing.assert_array_equal(other.view(np.uint32), results[0].view(np.uint32))


@pytest.mark.parametrize("n", [1, 2, 3, 40], ids=lambda n: f"{n}_tokens")
def test_grouped_weights_give_each_weights_own_bits(rng, n):
    """matmuls_q16 (Q/K/V in one call) is bit for bit three matmul_q16 calls, on any thread count."""
    qtypes, rows, k = [GGMLType.Q5_0, GGMLType.Q4_K, GGMLType.Q8_0], [64, 18, 7], 512
    x = (rng.standard_normal((n, k)) * 2).astype(np.float32)
    for threads in (1, 2):
        be = NumbaBackend(n_threads=threads)
        ws = [
            be.upload_quant(random_quant_tensor(t, (m, k), rng), t, (m, k), name=t.name)
            for t, m in zip(qtypes, rows, strict=True)
        ]
        grouped = [np.full((n, m), np.nan, np.float32) for m in rows]
        be.matmuls_q16(x, ws, grouped)
        for w, out in zip(ws, grouped, strict=True):
            alone = np.full_like(out, np.nan)
            be.matmul_q16(x, w, alone)
            assert np.isfinite(alone).all()
            np.testing.assert_array_equal(out.view(np.uint32), alone.view(np.uint32))


def test_a_type_without_an_integer_kernel_is_refused():
    be = NumbaBackend(n_threads=1)
    raw = random_quant_tensor(GGMLType.Q2_K, (4, 256), np.random.default_rng(0))
    w = be.upload_quant(raw, GGMLType.Q2_K, (4, 256), name="blk.0.attn_q.weight")
    with pytest.raises(RealmError, match=r"matmul_q16: w 'blk\.0\.attn_q\.weight' must be one of .* Q2_K"):
        be.matmul_q16(np.zeros((1, 256), np.float32), w, np.empty((1, 4), np.float32))
