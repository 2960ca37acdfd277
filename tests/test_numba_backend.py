"""What the conformance suite does not reach on the numba "cpu" backend: its device and
thread arguments, the default thread count under contention, zero-copy uploads, the
matmul's weight paths (each vectorized row decoder, the F32 kernel and the exact-decoder
fallback, over a partial tile of rows), thread-count independence, aliasing, what warmup
compiles and the first-compile message. Batch invariance of the matmul has its own file,
test_batch_invariance_matmul.py."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conformance import MATMUL_RTOL, assert_exact, assert_within

from realm.backend import QuantTensor
from realm.errors import BackendUnavailableError, InvalidParameterError, RealmError, UnsupportedQuantError
from realm.gguf.types import GGMLType, type_traits
from realm.quants import SUPPORTED_TYPES
from realm.testing import random_quant_tensor

pytest.importorskip("numba")
from realm_numba import CpuQuantTensor, NumbaBackend  # noqa: E402
from realm_numba import threads as th  # noqa: E402
from realm_numba.cache import _COMPILED, drop_stale_kernels  # noqa: E402
from realm_numba.compile_notice import MESSAGE, CompileNotice  # noqa: E402
from realm_numba.kernels import LANES  # noqa: E402
from realm_numba.warmup import warm_steps  # noqa: E402

# After kernels.py, which sets numba's cache location before any kernel module is imported.
matvec = importlib.import_module("realm_numba.matvec")
# The types with a vectorized matmul row decoder in matvec.py, read from its ``<type>_row``
# functions rather than from the LANES table that the backend hands them.
ROW_DECODERS = frozenset(
    GGMLType[name[: -len("_row")].upper()]
    for name in vars(matvec)
    if name.endswith("_row") and name[: -len("_row")].upper() in GGMLType.__members__
)


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
    code = (
        "import sys; from realm_numba import NumbaBackend; a = NumbaBackend.probe(); "
        "assert a.available, a; assert 'numba' not in sys.modules, 'probe imported numba'; "
        "d = a.devices[0]; assert (d.device, d.kind) == ('cpu', 'cpu'), d; "
        "assert d.name.endswith('threads)'), d.name"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("device", ["cuda", "cpu:1", "numpy"])
def test_other_devices_are_refused(device):
    with pytest.raises(BackendUnavailableError, match="one device, 'cpu'"):
        NumbaBackend(device=device)


def test_probe_says_how_to_install_numba(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba" else find_spec(name, *a)
    )
    availability = NumbaBackend.probe()
    assert not availability.available
    assert availability.reason == "numba is not installed; pip install numba (the 'cpu' extra of realm)"


@pytest.mark.parametrize("n_threads", [0, -1, 100000, True, False, 2.0, "2"])
def test_bad_thread_counts_are_refused(n_threads):
    with pytest.raises(InvalidParameterError, match="n_threads"):
        NumbaBackend(n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [np.int64(1), np.int32(2)])
def test_numpy_integer_thread_counts_are_accepted(n_threads):
    be = NumbaBackend(n_threads=n_threads)
    assert be.n_threads == int(n_threads) and type(be.n_threads) is int
    assert be.threads_now == int(n_threads)


_ONE_THREAD_RUN = """
import resource, sys, time
import realm
from realm.testing import write_model
path = write_model(sys.argv[1], n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=768, n_vocab=2048)
model = realm.load(path, device="cpu", n_threads=1)
model.generate("warm", max_tokens=4, temperature=0)
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(3):
    model.generate("Once upon a time", max_tokens=40, temperature=0)
    model.logits(list(range(1, 120)))  # a prompt's pass as well as decode steps
after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(cpu / wall)
"""


def test_one_thread_means_one_busy_cpu(tmp_path):
    """``n_threads=1`` is honoured exactly: generating and a prompt's pass keep one CPU busy,
    no more (no numba, OpenMP or BLAS worker computing or spinning beside it), in a fresh
    process whose CPU time counts every thread."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to tell one busy thread from two")
    run = subprocess.run([sys.executable, "-c", _ONE_THREAD_RUN, str(tmp_path / "m.gguf")],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    busy = float(run.stdout.split()[-1])
    assert 0.3 < busy < 1.15, f"CPU time / wall time {busy:.2f} with n_threads=1"


def test_default_threads_follow_the_cpus_others_leave_free():
    class Share:  # free CPUs as measured, in order
        works = True

        def __init__(self, values):
            self.values = list(values)

        def free_cpus(self):
            return self.values.pop(0)

    adaptive = th.AdaptiveThreads(2, Share([1.96, 1.33, 1.0, None, 1.9]), interval=0.0)
    # quiet; a busy process beside two threads (it gets 2/3 of a core); the same beside one;
    # no reading (keep); quiet again
    assert [adaptive.current() for _ in range(5)] == [2, 1, 1, 1, 2]


@pytest.mark.parametrize(
    ("free", "limit", "expected"),
    [(2.0, 2, 2), (1.8, 2, 2), (1.7, 2, 1), (0.2, 2, 1), (7.9, 8, 8), (6.5, 8, 6), (8.0, 4, 4)],
)
def test_a_cpu_counts_as_free_when_others_use_little_of_it(free, limit, expected):
    assert th.threads_for(free, limit) == expected


def test_cpu_share_reads_busy_ticks_of_this_process_cpus(tmp_path):
    cpus = th.affinity_cpus()
    stat = tmp_path / "stat"

    def write(user, nice, idle):
        lines = [f"cpu  {user * len(cpus)} {nice * len(cpus)} 0 {idle * len(cpus)} 0 0 0 0 0 0"]
        lines += [f"cpu{c} {user} {nice} 0 {idle} 0 0 0 0 0 0" for c in cpus]
        lines += [f"cpu{max(cpus) + 1} 999999 0 0 0 0 0 0 0 0 0", "intr 1 2 3"]  # not ours
        stat.write_text("\n".join(lines) + "\n")

    write(1_000, 0, 1_000)
    share = th.CpuShare(str(stat))
    assert share.works
    # Others kept every one of our CPUs half busy (this process's own time is ~0 here).
    write(101_000, 0, 101_000)
    assert share.free_cpus() == pytest.approx(len(cpus) / 2, abs=0.01)
    # Niced processes count too: nice does not rank processes across scheduling groups.
    write(101_000, 100_000, 101_000)
    assert share.free_cpus() == pytest.approx(0.0, abs=0.01)
    assert th.CpuShare("/nonexistent/stat").works is False
    live = th.CpuShare()
    if live.works:
        free = live.free_cpus()
        assert free is None or 0.0 <= free <= len(live.cpus)


def test_cgroup_quota_caps_the_default(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/a/b\n")
    (tmp_path / "a" / "b" / "cpu.max").write_text("max 100000\n")
    assert th.cgroup_cpu_limit(str(tmp_path), str(cgroup)) is None
    (tmp_path / "a" / "cpu.max").write_text("150000 100000\n")
    assert th.cgroup_cpu_limit(str(tmp_path), str(cgroup)) == 1
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    (tmp_path / "a" / "cpu.max").write_text("max 100000\n")
    assert th.cgroup_cpu_limit(str(tmp_path), str(cgroup)) == 4
    assert th.cgroup_cpu_limit(str(tmp_path), str(tmp_path / "missing")) is None


def test_cgroup_v1_quota_caps_the_default(tmp_path):
    v1 = tmp_path / "cpu" / "docker"
    v1.mkdir(parents=True)
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/docker\n3:cpu,cpuacct:/docker\n0::/\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert th.cgroup_cpu_limit(str(tmp_path), str(cgroup)) is None
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    assert th.cgroup_cpu_limit(str(tmp_path), str(cgroup)) == 2


def test_default_backend_adapts_and_explicit_does_not():
    default = NumbaBackend()
    assert default.n_threads == th.default_threads(default._numba.config.NUMBA_NUM_THREADS)
    assert 1 <= default.threads_now <= default.n_threads
    assert NumbaBackend(n_threads=1)._adaptive is None


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


def test_one_class_per_format_feeds_every_table():
    """The format registry (formats.py) is the one place a type is described: every type the
    reference decodes has a class whose block size is gguf's, the integer formats are the
    same classes, and the backend's tables are read from them."""
    from realm_numba import formats, int8_formats
    from realm_numba.kernels import DECODABLE

    assert {GGMLType(c) for c in formats.FORMATS} == set(SUPPORTED_TYPES) == set(DECODABLE)
    for code, fmt in formats.FORMATS.items():
        traits = type_traits(code)
        assert (fmt.block_values, fmt.block_bytes) == (traits.block_size, traits.type_size)
    assert all(formats.FORMATS[c] is f for c, f in int8_formats.FORMATS.items())
    # the float matmul's vectorized decoders and the bytes each one's inner loop walks
    assert LANES == {
        GGMLType.F16: 0, GGMLType.BF16: 0, GGMLType.Q4_0: 16, GGMLType.Q4_1: 16, GGMLType.Q5_0: 16,
        GGMLType.Q5_1: 16, GGMLType.Q8_0: 32, GGMLType.Q4_K: 32, GGMLType.Q5_K: 32, GGMLType.Q6_K: 16,
    }  # fmt: skip
    # cache.py counts the registry as a kernel source: editing a class drops the cached kernels
    assert _COMPILED.search(pathlib.Path(formats.__file__).read_bytes())


def test_dispatch_writes_one_branch_per_format():
    """`formats.dispatch` calls, for each type id, what its format's entry says, and the
    fallback for the others."""
    from numba import njit

    from realm_numba.formats import FORMATS, dispatch

    probe = dispatch("probe", "out", lambda fmt, use: None if fmt.block_values == 1 else
                     f"out[0] = {use(fmt.block_bytes)}", njit, "realm_numba.formats",
                     fallback="out[0] = -1")
    out = np.zeros(1, np.int64)
    for code, fmt in FORMATS.items():
        probe(code, out)
        assert out[0] == (-1 if fmt.block_values == 1 else fmt.block_bytes), fmt.__name__
    probe(999, out)
    assert out[0] == -1


def test_every_row_decoder_has_its_lanes():
    """`upload_quant` hands each decoder its ``lanes`` from LANES (0 when missing): a decoder
    without an entry would walk no bytes and leave its tile row unwritten."""
    assert len(ROW_DECODERS) >= 10, sorted(ROW_DECODERS)
    assert set(LANES) == ROW_DECODERS
    assert all(LANES[t] in (16, 32) for t in ROW_DECODERS if type_traits(t).block_size > 1)


# Every vectorized decoder, F32 (multiplied in place) and two types that go through the
# exact decoder (one per block size).
MATMUL_PATHS = sorted(ROW_DECODERS | {GGMLType.F32, GGMLType.IQ4_NL, GGMLType.Q2_K})


@pytest.mark.parametrize("qtype", MATMUL_PATHS, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 5], ids=lambda n: f"n{n}")
def test_matmul_batch_paths(cpu, reference, rng, qtype, n):
    """Each of the matmul's weight paths against the reference, for one row of x and several.
    m = 7 is one full tile of four weight rows and a partial one (three rows decoded, the
    fourth scratch row's result dropped), one tile per thread on two threads."""
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


@pytest.mark.parametrize(
    "n,n_head,n_kv,threads,n_split",
    [(1, 9, 3, 2, 1), (1, 4, 1, 2, 2), (1, 4, 1, 1, 1), (1, 6, 2, 2, 1), (1, 6, 2, 4, 2), (5, 9, 3, 2, 1)],
)
def test_attention_splits_a_kv_heads_queries_only_below_the_thread_count(n, n_head, n_kv, threads, n_split):
    """Every task reads its kv head's whole keys and values: heads are split only when there
    are fewer tasks (tokens x kv heads) than threads."""
    from realm_numba import kernels

    plan = kernels.attention_plan(n, n_head, n_kv, 64, np.full(n, 160, np.int32), threads)
    assert plan == (161, n_split, min(threads, n * n_kv * n_split))


@pytest.mark.parametrize("n_head,n_kv", [(9, 3), (4, 1), (6, 2)])
def test_attention_does_not_depend_on_how_its_tasks_are_split(rng, n_head, n_kv):
    """`attention_plan` picks how a kv head's query heads are split into tasks and how many
    threads take them: any split gives each head the same bits, so the plan may change with
    the thread count and the batch."""
    from realm_numba import kernels

    slots, block, hd, n = 256, 16, 32, 3
    k_pool = rng.standard_normal((slots, n_kv, hd)).astype(np.float32)
    v_pool = rng.standard_normal((slots, n_kv, hd)).astype(np.float32)
    table = rng.permutation(slots // block).reshape(2, -1).astype(np.int32)
    q = rng.standard_normal((n, n_head, hd)).astype(np.float32)
    seq_ids, positions = np.array([0, 1, 1], np.int32), np.array([100, 37, 120], np.int32)
    outs = []
    for n_split in range(1, n_head // n_kv + 1):
        for n_chunks in (1, 2, 3):
            out = np.full_like(q, np.nan)
            kernels.attention_paged(q, k_pool, v_pool, table, block, seq_ids, positions, np.float32(0.2), 0,
                                    np.float32(0.0), out, 121, n_split, n_chunks)  # fmt: skip
            outs.append(out)
    assert not np.isnan(outs[0]).any()
    for out in outs[1:]:
        assert_exact(out, outs[0], "attention with another split")


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
        cpu.get_rows(np.zeros((4, 8), np.float32), np.array([-1], np.int32), np.empty((1, 8), np.float32))


def test_non_contiguous_out_is_refused(cpu):
    x = np.ones((4, 8), np.float32)
    out = np.empty((4, 16), np.float32)[:, ::2]
    with pytest.raises(RealmError, match="C-contiguous"):
        cpu.scale(x, 2.0, out)


def test_warmup_reports_each_group_and_leaves_the_backend_usable(cpu, rng):
    seconds = cpu.warmup(progress=False)
    assert list(seconds) == list(dict.fromkeys(group for group, _ in warm_steps(cpu)))
    assert {"get_rows", "attention_paged", "rms_norm", "dequantize"} <= set(seconds)
    assert all(isinstance(v, float) and v >= 0 for v in seconds.values())
    x = np.full((1, 4), 2.0, np.float32)
    out = np.empty_like(x)
    cpu.scale(x, 1.5, out)
    assert out.tolist() == [[3.0, 3.0, 3.0, 3.0]]


# Run in a fresh process, where no kernel is loaded yet: warm up for a model's types, note
# the signatures each kernel then holds (compiled or loaded from the disk cache), then do
# what the model's weights see (matmuls of 1 to 9 rows, embedding lookups) and note them again.
_WARMUP_PROBE = """
import json, sys
import numpy as np
from realm.gguf.types import GGMLType
from realm.testing import random_quant_tensor
from realm_numba import NumbaBackend

be = NumbaBackend(n_threads=2)
kernels = {n: getattr(be._k, n) for n in be._k.__all__ if hasattr(getattr(be._k, n), "signatures")}

def held():
    return {n: sorted(map(str, d.signatures)) for n, d in kernels.items()}

qtypes = [GGMLType[t] for t in sys.argv[1:]]
before = held()
be.warmup(set(qtypes), progress=False)
warmed = held()
rng = np.random.default_rng(0)
for qtype in qtypes:
    shape = (5, 256)
    w = be.upload_quant(random_quant_tensor(qtype, shape, rng), qtype, shape, name=qtype.name)
    matmul = be.matmul_q16 if be.supports("matmul_q16", qtype) else be.matmul  # as the model does
    for n in (1, 2, 4, 9):
        matmul(rng.standard_normal((n, 256)).astype(np.float32), w, be.empty((n, 5)))
    be.get_rows(w, be.upload(np.array([4, 0], np.int32)), be.empty((2, 256)))
print(json.dumps({"before": before, "warmed": warmed, "used": held()}))
"""


@pytest.mark.parametrize(
    ("qtypes", "matmul_kernels"),
    [
        (["Q4_1", "Q8_0", "F32"], {"matmul_q16", "matmul_f32"}),
        (["Q4_K", "Q6_K", "F16"], {"matmul_q16", "matmul_quant"}),
        (["IQ2_XS"], {"matmul_quant"}),  # no decoder of its own: the exact one, same kernel
    ],
    ids=["Q4_1+Q8_0+F32", "Q4_K+Q6_K+F16", "IQ2_XS"],
)
def test_warmup_for_a_model_compiles_what_its_weights_need(qtypes, matmul_kernels):
    """After ``warmup(model's types)``, the model's matmuls (any number of rows) and embedding
    lookups compile nothing more; and warmup compiled neither a matmul kernel the model's
    types do not use nor full dequantization or float32-table lookups (tests only)."""
    run = subprocess.run(
        [sys.executable, "-c", _WARMUP_PROBE, *qtypes], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    held = json.loads(run.stdout.splitlines()[-1])
    assert not any(held["before"].values()), held["before"]  # the probe starts from nothing
    compiled = {name for name, sigs in held["warmed"].items() if sigs}
    assert {name for name in compiled if name.startswith("matmul")} == matmul_kernels
    assert "get_rows" in compiled
    assert not compiled & {"dequantize_rows", "take_rows"}  # full dequantization, float32 tables
    assert held["used"] == held["warmed"]


def test_compile_notice_speaks_once_and_only_for_realm_kernels(capsys):
    notice = CompileNotice()
    notice.kernel_compiling("my_project.kernels")
    assert notice.compiled == 0 and capsys.readouterr().err == ""
    notice.kernel_compiling("realm_numba.matvec")
    notice.kernel_compiling("realm_numba.rows")
    assert notice.compiled == 2 and capsys.readouterr().err == MESSAGE + "\n"


def test_compile_message_only_when_the_cache_is_cold(tmp_path):
    """A fresh NUMBA_CACHE_DIR: the first process compiles one kernel and says so on stderr;
    the second loads it from the cache and says nothing."""
    code = (
        "import numpy as np; from realm_numba import NumbaBackend; "
        "be = NumbaBackend(n_threads=1); out = np.empty((1, 3), np.float32); "
        "be.matmul(np.ones((1, 8), np.float32), np.ones((3, 8), np.float32), out); "
        "assert out.tolist() == [[8.0, 8.0, 8.0]], out"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert runs[0].stderr.count(MESSAGE) == 1, runs[0].stderr
    assert MESSAGE not in runs[1].stderr, runs[1].stderr


@pytest.mark.parametrize(
    "source",
    [
        "@njit\ndef f(x):\n    return x\n",
        # intrinsics made by a function
        "def make():\n    @intrinsic\n    def f(typingctx, x):\n        pass\n",
        "from llvmlite import ir\nI8 = ir.IntType(8)\n",  # IR that compiled functions call
    ],
    ids=["njit", "nested_intrinsic", "llvm_ir"],
)
def test_editing_a_kernel_source_drops_the_cached_kernels(tmp_path, source):
    """numba checks a cached kernel only against its own file: editing a module whose code it
    calls (a decoder, an intrinsic's IR) must drop the package's cache, and nothing else must."""
    package, cache = tmp_path / "pkg", tmp_path / "cache"
    package.mkdir()
    (package / "kernel.py").write_text(source)
    (package / "python_side.py").write_text("def helper():\n    return 1\n")
    assert drop_stale_kernels(package, cache)  # the first stamp
    (cache / "kernel.f-1.py311.nbi").write_bytes(b"cached")
    (package / "python_side.py").write_text("def helper():\n    return 2\n")
    assert not drop_stale_kernels(package, cache)
    assert (cache / "kernel.f-1.py311.nbi").exists()
    (package / "kernel.py").write_text(source + "# edited\n")
    assert drop_stale_kernels(package, cache)
    assert not (cache / "kernel.f-1.py311.nbi").exists()


_LOGITS_DIGEST = """
import hashlib, realm
from realm.models_on_pypi import smollm2_path
m = realm.load(smollm2_path(), device="cpu", n_ctx=128, n_threads=2)
ids = m.chat_tokens([{"role": "user", "content": "Name a fruit."}]) + [504, 1234, 88, 17, 4000, 12]
print(hashlib.sha256(m.logits(ids).tobytes()).hexdigest())
"""


def test_compiled_and_cached_kernels_give_the_same_bits(tmp_path):
    """A process that compiles the kernels and one that loads them from numba's cache must
    compute the same logits, bit for bit: a server and its client, or two runs of a test,
    are such a pair. (A kernel calling another kernel's helpers once made them differ.)"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    digests = []
    for _ in range(2):  # the first compiles into the empty cache, the second loads from it
        run = subprocess.run([sys.executable, "-c", _LOGITS_DIGEST], env=env, capture_output=True,
                             text=True, timeout=900)  # fmt: skip
        assert run.returncode == 0, run.stderr
        digests.append(run.stdout.split()[-1])
    assert any((tmp_path / "numba-cache").rglob("*.nbi")), "the first process cached nothing"
    assert digests[0] == digests[1]
