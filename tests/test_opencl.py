"""The OpenCL backend beyond the op-by-op suite: device selection, probing, program caching,
compiler errors, views with offsets, the matvec path for 2..4 rows and attention over many
key tiles (the suite's contexts fit in one tile of 64 keys)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conformance import assert_exact, assert_within, check_attention, check_matmul
from conftest import load_backend

from realm.backend import QuantTensor, RopeMode
from realm.errors import BackendUnavailableError, RealmError
from realm.gguf.types import GGMLType
from realm.testing import random_quant_tensor

cl = pytest.importorskip("pyopencl")
devices = pytest.importorskip("realm_opencl.devices")
runtime_module = pytest.importorskip("realm_opencl.runtime")


@pytest.fixture(scope="module")
def be():
    return load_backend("opencl")


# ----------------------------------------------------------------------------- devices


def test_probe_lists_every_device_by_its_device_string(be):
    availability = type(be).probe()
    assert availability.available and availability.devices
    for info in availability.devices:
        assert info.kind in ("cpu", "gpu") and info.memory_bytes > 0
        assert type(be)(info.device).device == info.device


def _fake(kind: str, name: str):
    device_type = cl.device_type.GPU if kind == "gpu" else cl.device_type.CPU
    return SimpleNamespace(type=device_type, name=name, global_mem_size=2**30,
                           platform=SimpleNamespace(name="fake platform"))


@pytest.mark.parametrize(
    "found, indices, expected",
    [
        ([(0, 0, "cpu"), (1, 0, "gpu"), (1, 1, "gpu")], (), (1, 0)),  # a GPU wins
        ([(0, 0, "cpu"), (0, 1, "cpu")], (), (0, 0)),  # else the first CPU
        ([(0, 0, "cpu"), (1, 0, "gpu"), (1, 1, "gpu")], (1, 1), (1, 1)),
        ([(0, 0, "gpu"), (0, 1, "cpu")], (0, 1), (0, 1)),
    ],
)
def test_device_selection(monkeypatch, found, indices, expected):
    fakes = [(p, d, _fake(kind, f"dev{p}{d}")) for p, d, kind in found]
    monkeypatch.setattr(devices, "enumerate_devices", lambda: fakes)
    p, d, device = devices.select_device(indices)
    assert (p, d) == expected and device.name == f"dev{p}{d}"


@pytest.mark.parametrize("indices, match", [((3, 0), "no OpenCL device opencl:3:0"),
                                            ((0,), "opencl:P:D")])
def test_bad_device_indices_list_the_devices(monkeypatch, indices, match):
    fakes = [(0, 0, _fake("cpu", "only device"))]
    monkeypatch.setattr(devices, "enumerate_devices", lambda: fakes)
    with pytest.raises(BackendUnavailableError, match=match) as info:
        devices.select_device(indices)
    assert "opencl:0:0 = only device" in str(info.value)


def test_other_backends_device_strings_are_refused(be):
    with pytest.raises(BackendUnavailableError, match="'opencl' devices"):
        type(be)("cuda:0")


def test_probe_without_a_platform_says_how_to_install_one(monkeypatch):
    def no_platform():
        raise cl.LogicError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")

    monkeypatch.setattr(cl, "get_platforms", no_platform)
    availability = devices.probe()
    assert not availability.available and "pocl-opencl-icd" in availability.reason


def test_probe_without_pyopencl_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyopencl", None)  # `import pyopencl` now fails
    availability = devices.probe()
    assert not availability.available and "pip install pyopencl" in availability.reason


def test_probe_survives_a_crashing_driver(monkeypatch):
    def crash():
        raise MemoryError("driver fell over")

    monkeypatch.setattr(cl, "get_platforms", crash)
    availability = devices.probe()
    assert not availability.available and "driver fell over" in availability.reason


# ----------------------------------------------------------------------------- programs


def test_build_failure_carries_the_compiler_log(be):
    from realm.kernels import read

    source = read(runtime_module.PRELUDE) + (
        "KERNEL void broken(BUF(float, x)) { BIND(float, x); x[0] = no_such_name; }\n")
    with pytest.raises(runtime_module.KernelBuildError, match="no_such_name") as info:
        be.runtime.build("broken", source)
    assert "'broken'" in str(info.value)


def test_programs_are_built_once_per_context(be, monkeypatch):
    fresh = runtime_module.Runtime(be.runtime.device)
    builds = []
    real_build = fresh.build
    monkeypatch.setattr(fresh, "build", lambda key, src: builds.append(key) or real_build(key, src))
    source = "__kernel void twice(__global float* x) { x[0] = 1.0f; }"
    first = fresh.kernels("k", lambda: source)
    assert fresh.kernels("k", lambda: source) is first and builds == ["k"]
    # a second backend on the same device shares the runtime, so it compiles nothing again
    assert type(be)(be.device).runtime is be.runtime
    kernels = be._quant_kernels(GGMLType.Q4_0)
    assert be._quant_kernels(GGMLType.Q4_0)["matvec"] is kernels["matvec"]


# ----------------------------------------------------------------------------- memory


def test_weights_stay_quantized_on_the_device(be):
    raw = random_quant_tensor(GGMLType.Q4_K, (64, 512), np.random.default_rng(0))
    w = be.upload_quant(raw, GGMLType.Q4_K, (64, 512), name="w")
    assert isinstance(w, QuantTensor) and w.data.dtype == np.uint8
    assert w.data.nbytes == raw.nbytes == w.nbytes  # the file's bytes, not float32


def test_bad_inputs_raise_clear_errors(be, reference):
    foreign = reference.upload_quant(np.zeros(18, np.uint8), GGMLType.Q4_0, (1, 32), name="w")
    with pytest.raises(RealmError, match="'w' was not uploaded by the OpenCL backend"):
        be.matmul(be.upload(np.zeros((1, 32), np.float32)), foreign, be.empty((1, 1)))
    with pytest.raises(RealmError, match="float32 and int32"):
        be.upload(np.zeros(3, np.float64))
    table = be.upload(np.zeros((4, 8), np.float32))
    with pytest.raises(RealmError, match="id 4 at position 1, out of range"):
        be.get_rows(table, be.upload(np.array([0, 4], np.int32)), be.empty((2, 8)))
    with pytest.raises(RealmError, match="k=5"):
        be.matmul(be.upload(np.zeros((1, 5), np.float32)), table, be.empty((1, 4)))


# ----------------------------------------------------------------------------- views


def _nan(be, shape):
    return be.upload(np.full(shape, np.nan, np.float32))


@pytest.mark.parametrize("n", [3, 9], ids=["matvec", "tiled"])
def test_matmul_on_row_views(be, reference, rng, n):
    k, m = 256, 40
    raw = random_quant_tensor(GGMLType.Q4_K, (m, k), rng)
    x_all = rng.standard_normal((n + 5, k)).astype(np.float32)
    expected = np.empty((n, m), np.float32)
    reference.matmul(x_all[2 : 2 + n], reference.upload_quant(raw, GGMLType.Q4_K, (m, k)), expected)
    out_all = _nan(be, (n + 3, m))
    be.matmul(be.upload(x_all)[2 : 2 + n], be.upload_quant(raw, GGMLType.Q4_K, (m, k)),
              out_all[1 : 1 + n])
    got = be.download(out_all)
    assert np.isnan(got[0]).all() and np.isnan(got[1 + n :]).all()  # rows outside untouched
    bound = 2e-5 * (np.abs(x_all[2 : 2 + n]) @ np.abs(reference_dequant(reference, raw, m, k)).T)
    assert_within(got[1 : 1 + n], expected, bound, "matmul on views")


def reference_dequant(reference, raw, m, k):
    out = np.empty((m, k), np.float32)
    reference.dequantize(reference.upload_quant(raw, GGMLType.Q4_K, (m, k)), out)
    return out


def test_row_ops_in_place_on_views(be, reference, rng):
    """The model's pattern: leading-row views, reshaped, with ops writing in place."""
    n_head, hd, n = 4, 32, 3
    host = rng.standard_normal((6, n_head * hd)).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(n_head * hd)).astype(np.float32)
    bias = rng.standard_normal(n_head * hd).astype(np.float32)
    pos = np.array([5, 6, 7], np.int32)
    dev = be.upload(host)
    view = dev[2 : 2 + n]
    ref = host[2 : 2 + n].copy()
    for b, x in ((be, view), (reference, ref)):
        b.rms_norm(x, b.upload(weight), 1e-6, x)
        b.add(x, b.upload(bias), x)
        heads = x.reshape(n, n_head, hd)
        b.rope(heads, b.upload(pos), hd, 10000.0, RopeMode.NEOX, heads)
        b.scale(x, 0.5, x)
        b.swiglu(x, x, x)
    got = be.download(dev)
    assert_exact(got[:2], host[:2], "rows before the view")
    assert_exact(got[2 + n :], host[2 + n :], "rows after the view")
    assert_within(got[2 : 2 + n], ref, 1e-5 * np.abs(ref).max() + 1e-6, "row ops on a view")


def test_get_rows_copy_rows_and_attention_on_views(be, reference, rng):
    n, n_past, n_head, n_kv, hd, ctx = 2, 5, 4, 2, 16, 12
    table = rng.standard_normal((10, n_head * hd)).astype(np.float32)
    ids = np.array([7, 2], np.int32)
    kv = rng.standard_normal((n_past + n, n_kv, hd)).astype(np.float32)
    results = []
    for b in (be, reference):
        q_all = b.upload(np.full((n + 2, n_head * hd), np.nan, np.float32))
        b.get_rows(b.upload(table), b.upload(ids), q_all[1 : 1 + n])
        caches = [b.upload(np.full((ctx, n_kv, hd), np.nan, np.float32)) for _ in range(2)]
        kv_all = b.upload(np.concatenate([kv, kv[:1]]))
        for cache in caches:
            b.copy_rows(kv_all[: n_past + n], cache, 0)
        out_all = b.upload(np.full((n + 1, n_head * hd), np.nan, np.float32))
        b.attention(q_all[1 : 1 + n].reshape(n, n_head, hd), caches[0], caches[1], n_past, 0.25,
                    out_all[1:].reshape(n, n_head, hd))
        results.append(b.download(out_all))
    assert np.isnan(results[0][0]).all()
    assert_within(results[0][1:], results[1][1:], 1e-5 * np.abs(kv).max(), "attention on views")


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("qtype", [GGMLType.Q4_K, GGMLType.Q8_0, GGMLType.IQ2_XS, GGMLType.F16],
                         ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("max_tpr", [1, 2, 64], ids=lambda t: f"tpr{t}")
def test_matmul_small_batches(be, reference, rng, monkeypatch, qtype, n, max_tpr):
    """n <= 4 runs the matvec kernel with several x rows per pass (5 is the first tiled size),
    with each weight row shared by 1, 2 or up to 64 work-items as on CPUs and GPUs."""
    monkeypatch.setattr(be, "matvec_max_tpr", max_tpr)
    check_matmul(be, reference, rng, qtype, n=n, m=37, k_blocks=9)


@pytest.mark.parametrize("qtype", [GGMLType.Q5_1, GGMLType.BF16], ids=lambda t: t.name)
def test_matmul_spanning_several_tiles(be, reference, rng, qtype):
    """More x rows and weight rows than one 64 x 64 output tile, with ragged edges."""
    check_matmul(be, reference, rng, qtype, n=70, m=130, k_blocks=3)


ATTENTION_CASES = {
    "many_tiles": dict(n=3, n_past=200, n_head=8, n_kv_head=2, head_dim=64, ctx=210),
    "window_across_tiles": dict(n=4, n_past=150, n_head=4, n_kv_head=4, head_dim=32, ctx=160,
                                window=100),
    "softcap_many_tiles": dict(n=2, n_past=130, n_head=2, n_kv_head=1, head_dim=64, ctx=140,
                               softcap=3.0),
    "head_dim_512": dict(n=2, n_past=70, n_head=2, n_kv_head=1, head_dim=512, ctx=80),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_over_many_key_tiles(be, reference, rng, case):
    check_attention(be, reference, rng, **ATTENTION_CASES[case])
