"""What the conformance suite does not reach on the numba "cpu" backend: its device and
thread arguments, zero-copy uploads, the kernel paths chosen by batch size (fused 2-3
token decode, tiled prefill with leftover rows and tokens), thread-count independence,
aliasing, and warmup."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conformance import MATMUL_RTOL, assert_exact, assert_within

from realm.backend import QuantTensor
from realm.errors import BackendUnavailableError, RealmError, UnsupportedQuantError
from realm.gguf.types import GGMLType, type_traits
from realm.testing import random_quant_tensor

pytest.importorskip("numba")
from realm_numba import CpuQuantTensor, NumbaBackend  # noqa: E402
from realm_numba.kernels import FAST_MATVEC  # noqa: E402


@pytest.fixture(scope="module")
def cpu():
    return NumbaBackend(n_threads=2)


def _weight(qtype: GGMLType, m: int, k_blocks: int, rng) -> tuple[np.ndarray, tuple[int, int]]:
    block = type_traits(qtype).block_size
    shape = (m, block * k_blocks if block > 1 else 40 * k_blocks)
    return random_quant_tensor(qtype, shape, rng), shape


def _check_matmul(be, reference, raw, qtype, shape, x):
    w_ref = reference.upload_quant(raw, qtype, shape)
    w_float = np.empty(shape, np.float32)
    reference.dequantize(w_ref, w_float)
    expected = np.empty((x.shape[0], shape[0]), np.float32)
    reference.matmul(x, w_ref, expected)
    out = np.full_like(expected, np.nan)
    be.matmul(x, be.upload_quant(raw, qtype, shape), out)
    bound = MATMUL_RTOL * (np.abs(x).astype(np.float64) @ np.abs(w_float).astype(np.float64).T)
    assert_within(out, expected, bound + 1e-30, f"matmul {qtype.name} n={x.shape[0]} {shape}")
    return out


def test_probe_does_not_import_numba():
    code = ("import sys; from realm_numba import NumbaBackend; a = NumbaBackend.probe(); "
            "assert a.available, a; assert 'numba' not in sys.modules, 'probe imported numba'; "
            "d = a.devices[0]; assert (d.device, d.kind) == ('cpu', 'cpu'), d; "
            "assert d.name.endswith('threads)'), d.name")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("device", ["cuda", "cpu:1", "numpy"])
def test_other_devices_are_refused(device):
    with pytest.raises(BackendUnavailableError, match="one device, 'cpu'"):
        NumbaBackend(device=device)


@pytest.mark.parametrize("n_threads", [0, -1, 100000])
def test_bad_thread_counts_are_refused(n_threads):
    with pytest.raises(BackendUnavailableError, match="n_threads"):
        NumbaBackend(n_threads=n_threads)


def test_upload_quant_keeps_the_callers_bytes(cpu, rng):
    raw, shape = _weight(GGMLType.Q4_K, 3, 2, rng)
    w = cpu.upload_quant(raw, GGMLType.Q4_K, shape, name="blk.0.ffn_up.weight")
    assert isinstance(w, CpuQuantTensor) and isinstance(w, QuantTensor)
    assert np.shares_memory(w.data, raw) and w.nbytes == raw.nbytes
    f32 = rng.standard_normal((2, 8)).astype(np.float32)
    wf = cpu.upload_quant(f32.view(np.uint8), GGMLType.F32, (2, 8))
    assert np.shares_memory(wf.rows, f32) and wf.rows.dtype == np.float32


def test_upload_converts_floats_and_keeps_integers(cpu):
    x = cpu.upload(np.arange(6, dtype=np.float64).reshape(2, 3)[:, ::2])
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.tolist() == [[0, 2], [3, 5]]
    ids = cpu.upload(np.array([3, 1], np.int32))
    assert ids.dtype == np.int32


def test_upload_quant_errors_name_the_tensor(cpu, rng):
    raw, shape = _weight(GGMLType.Q8_0, 2, 2, rng)
    with pytest.raises(RealmError, match=r"'w\.q'.*needs 136 bytes.*got 135"):
        cpu.upload_quant(raw.reshape(-1)[:-1], GGMLType.Q8_0, shape, name="w.q")
    with pytest.raises(RealmError, match="multiple of 32"):
        cpu.upload_quant(raw, GGMLType.Q8_0, (2, 60), name="w.q")
    with pytest.raises(UnsupportedQuantError, match="Q8_K"):
        cpu.upload_quant(raw, GGMLType.Q8_K, shape, name="w.q")


@pytest.mark.parametrize("qtype", sorted(FAST_MATVEC), ids=lambda t: t.name)
@pytest.mark.parametrize("n", [2, 3, 4, 5], ids=lambda n: f"n{n}")
def test_matmul_batch_paths(cpu, reference, rng, qtype, n):
    """2-3 tokens take the fused kernels token by token; 4-5 the tiled path with a leftover
    token and (m = 7) a partial tile of rows."""
    raw, shape = _weight(qtype, 7, 2, rng)
    _check_matmul(cpu, reference, raw, qtype, shape, rng.standard_normal((n, shape[1])).astype(np.float32))


@pytest.mark.parametrize("qtype", [GGMLType.Q4_1, GGMLType.Q6_K, GGMLType.IQ2_XS], ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 9])
def test_results_do_not_depend_on_the_thread_count(reference, rng, qtype, n):
    raw, shape = _weight(qtype, 37, 2, rng)
    x = rng.standard_normal((n, shape[1])).astype(np.float32)
    outs = []
    for threads in (1, 2):
        be = NumbaBackend(n_threads=threads)
        outs.append(_check_matmul(be, reference, raw, qtype, shape, x))
    assert_exact(outs[0], outs[1], f"matmul {qtype.name} n={n} on 1 vs 2 threads")


def test_matmul_accepts_a_plain_quant_tensor(cpu, reference, rng):
    raw, shape = _weight(GGMLType.Q5_0, 5, 3, rng)
    x = rng.standard_normal((1, shape[1])).astype(np.float32)
    expected = np.empty((1, 5), np.float32)
    reference.matmul(x, reference.upload_quant(raw, GGMLType.Q5_0, shape), expected)
    out = np.empty((1, 5), np.float32)
    cpu.matmul(x, QuantTensor(raw, GGMLType.Q5_0, shape, "plain"), out)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("n", [1, 6])
def test_matmul_into_its_own_input(cpu, rng, n):
    w = rng.standard_normal((64, 64)).astype(np.float32)
    x = rng.standard_normal((n, 64)).astype(np.float32)
    expected = x @ w.T
    buf = x.copy()
    cpu.matmul(buf, w, buf)
    np.testing.assert_allclose(buf, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_get_rows_out_of_range_names_the_id(cpu, rng):
    raw, shape = _weight(GGMLType.Q8_0, 4, 1, rng)
    w = cpu.upload_quant(raw, GGMLType.Q8_0, shape, name="token_embd.weight")
    with pytest.raises(RealmError, match=r"'token_embd\.weight' \(4 rows\): id 4 at position 1"):
        cpu.get_rows(w, np.array([0, 4], np.int32), np.empty((2, 32), np.float32))
    with pytest.raises(RealmError, match="id -1"):
        cpu.get_rows(np.zeros((4, 8), np.float32), np.array([-1], np.int32),
                     np.empty((1, 8), np.float32))


def test_non_contiguous_out_is_refused(cpu):
    x = np.ones((4, 8), np.float32)
    out = np.empty((4, 16), np.float32)[:, ::2]
    with pytest.raises(RealmError, match="C-contiguous"):
        cpu.scale(x, 2.0, out)


def test_warmup_reports_each_group_and_leaves_the_backend_usable(cpu, rng):
    seconds = cpu.warmup()
    assert {"matmul prefill", "attention", "rms_norm", "dequantize"} <= set(seconds)
    assert all(isinstance(v, float) and v >= 0 for v in seconds.values())
    x = np.full((1, 4), 2.0, np.float32)
    out = np.empty_like(x)
    cpu.scale(x, 1.5, out)
    assert out.tolist() == [[3.0, 3.0, 3.0, 3.0]]
