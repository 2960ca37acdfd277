"""Batch invariance of the ``cpu`` backend's matmuls (``matmul`` and ``matmul_q16``): a row's
result has the same bits whatever else is in the call.

A batching engine runs one decode token of each of many sequences, plus chunks of prompts,
through one matmul; realm promises a greedy request the same tokens alone or batched. So
row ``i`` of ``out`` must be bit-identical (not merely close) to a one-row call on ``x[i]``,
for any number of rows, any other rows (here: other rows, in another order, at other
magnitudes) and any thread count, for every weight type the backend multiplies.
"""

from __future__ import annotations

import numpy as np
import pytest
from conformance import MATMUL_RTOL, assert_exact, assert_within

from realm.gguf.types import GGMLType, type_traits
from realm.quants import SUPPORTED_TYPES
from realm.quants.activations import dequantize_q16, quantize_q16
from realm.testing import random_quant_tensor

pytest.importorskip("numba")
from realm_numba import NumbaBackend  # noqa: E402
from realm_numba.int8_formats import FORMATS as INT8_FORMATS  # noqa: E402

ROW_COUNTS = (1, 2, 3, 4, 5, 8, 17, 64, 300)
M = 37  # weight rows: several tiles per thread and a partial last tile


def _thread_counts() -> list[int]:
    import numba

    return sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)})


@pytest.fixture(scope="module")
def backends() -> dict[int, NumbaBackend]:
    return {n: NumbaBackend(n_threads=n) for n in _thread_counts()}


def _rows(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Random rows whose magnitudes differ by up to 1e6 from row to row."""
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), (n, 1)))
    return (rng.standard_normal((n, k)) * scale).astype(np.float32)


def _matmul(be: NumbaBackend, x: np.ndarray, w, op: str = "matmul") -> np.ndarray:
    out = np.full((x.shape[0], w.shape[0]), np.nan, np.float32)
    getattr(be, op)(x, w, out)
    return out


def _check_invariance(backends, reference, rng, w_cpu, w_ref, w_float, k: int, name: str,
                      op: str = "matmul") -> None:
    x = _rows(rng, max(ROW_COUNTS), k)
    one = backends[1]
    single = np.concatenate([_matmul(one, x[i : i + 1], w_cpu, op) for i in range(len(x))])
    for threads, be in backends.items():
        for n in ROW_COUNTS:
            pick = rng.permutation(len(x))[:n]  # which rows, in which order
            assert_exact(
                _matmul(be, x[pick], w_cpu, op),
                single[pick],
                f"{op} {name}: {n} rows on {threads} thread(s) against one row at a time",
            )
    expected = _matmul(reference, x, w_ref, op)
    rounded = dequantize_q16(*quantize_q16(x)) if op == "matmul_q16" else x
    magnitude = np.abs(rounded).astype(np.float64) @ np.abs(w_float).astype(np.float64).T
    assert_within(single, expected, MATMUL_RTOL * magnitude + 1e-30, f"{op} {name} against the reference")


@pytest.mark.parametrize("qtype", sorted(SUPPORTED_TYPES), ids=lambda t: t.name)
def test_quantized_rows_do_not_depend_on_the_batch(backends, reference, rng, qtype):
    if not backends[1].supports("matmul", qtype):
        pytest.skip(f"the cpu backend does not multiply {qtype.name}")
    block = type_traits(qtype).block_size
    shape = (M, 2 * block if block >= 256 else 5 * block if block > 1 else 67)
    raw = random_quant_tensor(qtype, shape, rng)
    w_ref = reference.upload_quant(raw, qtype, shape)
    w_float = np.empty(shape, np.float32)
    reference.dequantize(w_ref, w_float)
    w_cpu = backends[1].upload_quant(raw, qtype, shape, name=f"w_{qtype.name}")
    _check_invariance(backends, reference, rng, w_cpu, w_ref, w_float, shape[1], qtype.name)


@pytest.mark.parametrize("k", [64, 67])  # 67: rows of x start at every alignment
def test_float32_array_rows_do_not_depend_on_the_batch(backends, reference, rng, k):
    w = rng.standard_normal((M, k)).astype(np.float32)
    _check_invariance(backends, reference, rng, w, w, w, k, f"float32 array k={k}")


@pytest.mark.parametrize("qtype", sorted(GGMLType(code) for code in INT8_FORMATS), ids=lambda t: t.name)
def test_integer_matmul_rows_do_not_depend_on_the_batch(backends, reference, rng, qtype):
    """matmul_q16: the same, across its two ways of unpacking weights (few tokens, many)."""
    block = type_traits(qtype).block_size
    shape = (M, 2 * block if block >= 256 else 5 * block)
    raw = random_quant_tensor(qtype, shape, rng)
    w_ref = reference.upload_quant(raw, qtype, shape)
    w_float = np.empty(shape, np.float32)
    reference.dequantize(w_ref, w_float)
    w_cpu = backends[1].upload_quant(raw, qtype, shape, name=f"w_{qtype.name}")
    _check_invariance(backends, reference, rng, w_cpu, w_ref, w_float, shape[1], qtype.name, op="matmul_q16")
