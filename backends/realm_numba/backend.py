"""The numba CPU backend (device ``"cpu"``): the reference's ops as compiled, threaded kernels.

Weights stay in their GGML blocks (a view of the file's memory map, never copied) and
are multiplied straight from them; activations are C-contiguous float32 numpy arrays.
Each op is one call into one compiled kernel with at most one parallel region, and the
kernel for a weight is chosen once, when it is uploaded.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from realm.arguments import check_int
from realm.backend import (
    OPS,
    OPTIONAL_OPS,
    Availability,
    DeviceInfo,
    QuantTensor,
    RopeMode,
    check_quant_upload,
    parse_device,
)
from realm.errors import BackendArgumentError, BackendUnavailableError
from realm.gguf.types import GGMLType, type_traits
from realm.op_checks import (
    OpChecks,
    PagedIndexCheck,
    refuse_bad_id,
    refuse_bad_row,
    refuse_repeated_rows,
)
from realm_numba.openmp import release_thread_pool
from realm_numba.threads import affinity_cpus, default_threads, shared_adaptive

_QUANT_OPS = frozenset({"dequantize", "matmul", "get_rows"})

# The numba thread count last applied on each thread (see NumbaBackend._threads). Thread-local,
# not keyed by thread id: ids are reused, and the engine starts a fresh worker thread whenever
# work arrives after an idle spell.
_THREADS_SET = threading.local()

# The integer matmul kernel takes three weights; an unused one has no rows.
_NO_WEIGHT = np.zeros((0, 1), np.uint8)
_NO_WEIGHT.flags.writeable = False  # the type of the weights' read-only views: one compiled kernel

# The kernels write every out as flat rows; inputs may be strided (numba reads any layout,
# and matmul makes x contiguous itself).
CHECKS = OpChecks(np.ndarray, "numpy array", contiguous_outputs=True)


def refuse_shared_pools(op: str, activations: tuple, pools: tuple) -> None:
    """rope_write_kv ropes q and k in place and copies k and v into the pools: an activation
    that is a view of a pool would change under the kernel while it reads it."""
    for a in activations:
        if any(np.may_share_memory(a, pool) for pool in pools):
            raise BackendArgumentError(
                f"{op}: q, k and v must not share memory with k_pool or v_pool, got an array of "
                f"shape {a.shape} inside a pool; pass the new tokens' own buffers"
            )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _bound_openmp_spinning() -> None:
    """Make idle OpenMP workers spin a bounded while before sleeping (unless the user chose).

    A decode step is ~200 short parallel regions back to back: workers must still be
    awake for the next one. libgomp's default (300000 spins, cut to 1000 when it thinks
    the CPUs are oversubscribed) measured pathological here: workers fell asleep between
    calls and every matmul then waited ~8 ms (a scheduler tick) to wake them. An explicit
    count of 100000 (a few milliseconds) keeps them warm through a step and then lets them
    sleep. libgomp reads this once, when numba first loads it, so it is set before that.
    """
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "100000"


@dataclass
class CpuQuantTensor(QuantTensor):
    """A `QuantTensor` plus what the CPU kernels need, worked out once at upload.

    ``data`` is the raw blocks as a read-only ``uint8 [rows, row_bytes]`` view of the
    caller's buffer; ``rows`` is the same memory as float32 ``[rows, k]`` for an F32
    tensor (multiplied in place), else None; ``lanes`` is its decoder's (rows.LANES).
    """

    rows: np.ndarray | None = field(default=None, repr=False)
    lanes: int = 0


class NumbaBackend:
    """CPU backend on numba: fused quantized matmuls, threaded over fixed row ranges.

    >>> be = NumbaBackend(n_threads=1)
    >>> x = be.upload(np.ones((2, 4), np.float32))
    >>> out = be.empty((2, 4))
    >>> be.scale(x, 3.0, out)
    >>> be.download(out)[0].tolist()
    [3.0, 3.0, 3.0, 3.0]
    """

    name: ClassVar[str] = "cpu"

    @classmethod
    def probe(cls) -> Availability:
        """Available when numba is installed (found without importing it)."""
        if importlib.util.find_spec("numba") is None:
            return Availability(False, reason="numba is not installed; pip install numba "
                                "(the 'cpu' extra of realm)")
        info = DeviceInfo("cpu", f"{_cpu_name()} ({len(affinity_cpus())} threads)", kind="cpu",
                          memory_bytes=_host_memory_bytes())
        return Availability(True, (info,))

    def __init__(self, device: str = "cpu", n_threads: int | None = None) -> None:
        """``n_threads``: a fixed thread count (1 to numba's pool size), or None for the
        CPUs this process may use, fewer while other processes keep some of them busy."""
        spec = parse_device(device or "cpu")
        if spec.backend != "cpu" or spec.indices:
            raise BackendUnavailableError(f"the numba backend has one device, 'cpu'; got {device!r}")
        _bound_openmp_spinning()
        import numba

        from realm_numba import kernels
        from realm_numba.compile_notice import install_compile_notice

        install_compile_notice()
        pool = numba.config.NUMBA_NUM_THREADS
        if n_threads is None:
            self.n_threads = default_threads(pool)
            # The default follows the CPUs other processes leave free (see threads.py);
            # one monitor per process, read before each parallel kernel.
            self._adaptive = shared_adaptive(self.n_threads) if self.n_threads > 1 else None
        else:
            self.n_threads = check_int("n_threads", n_threads, minimum=1, maximum=pool,
                                       hint=" (numba's thread pool is NUMBA_NUM_THREADS)")
            self._adaptive = None
        self.device = "cpu"
        self._numba = numba
        self._k = kernels
        self._no_freq_factors = np.ones(0, np.float32)
        self._one_block = np.zeros((1, 1), np.int32)  # dense attention's block table
        self._check_paged_indices = PagedIndexCheck()  # each layer of a step passes the same indices
        self._q16_plans: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._threads()

    def release_threads(self) -> None:
        """The calling thread launches no kernels for a while: free its OpenMP workers, so that
        another thread's kernels (the engine's worker) have the CPUs to themselves (openmp.py)."""
        release_thread_pool()

    @property
    def threads_now(self) -> int:
        """Threads the next parallel kernel will use: `n_threads`, or fewer while other
        processes keep CPUs busy (default thread count only)."""
        return self.n_threads if self._adaptive is None else self._adaptive.value

    def _threads(self) -> int:
        """Apply this backend's thread count on the calling thread; returns it."""
        adaptive = self._adaptive  # inlined `AdaptiveThreads.current`: ~200 calls per token
        if adaptive is None:
            n = self.n_threads
        elif time.monotonic() < adaptive.next_check:
            n = adaptive.value
        else:
            n = adaptive.recheck()
        # numba's thread count belongs to the calling thread: apply ours wherever an op runs.
        # Asking numba each call costs ~2 us, so remember what was set on which thread.
        if getattr(_THREADS_SET, "n", None) != n:
            self._numba.set_num_threads(n)
            _THREADS_SET.n = n
        return n

    # ------------------------------------------------------------------ memory

    def upload(self, host: np.ndarray) -> np.ndarray:
        """A private C-contiguous copy; floating data becomes float32, integers keep their type."""
        host = np.asarray(host)
        dtype = np.float32 if host.dtype.kind == "f" else host.dtype  # (issubdtype: ~1 us more)
        return np.array(host, dtype=dtype, order="C", copy=True)

    def upload_quant(
        self, raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...], name: str = ""
    ) -> QuantTensor:
        """Keep the raw blocks where they are (a memory map stays a memory map: no copy)."""
        if not np.asarray(raw).flags.c_contiguous:  # kernels read the caller's bytes in place
            raise BackendArgumentError(f"tensor {name!r}: raw blocks must be one contiguous buffer")
        raw, qtype, shape, row_bytes = check_quant_upload(raw, qtype, shape, name, self._k.DECODABLE, "cpu")
        blocks = raw.reshape(raw.size // row_bytes, row_bytes).view()
        blocks.flags.writeable = False  # one compiled variant serves file maps and test arrays
        return self._prepare(QuantTensor(blocks, qtype, shape, name))

    def _prepare(self, w: QuantTensor) -> CpuQuantTensor:
        if isinstance(w, CpuQuantTensor):
            return w
        qtype = GGMLType(w.qtype)
        blocks = np.asarray(w.data)
        if blocks.ndim != 2:
            traits = type_traits(qtype)
            blocks = blocks.reshape(-1, w.shape[-1] // traits.block_size * traits.type_size)
        rows = blocks.view(np.float32) if qtype == GGMLType.F32 else None
        return CpuQuantTensor(blocks, qtype, tuple(w.shape), w.name, rows, self._k.LANES.get(qtype, 0))

    def download(self, x: np.ndarray) -> np.ndarray:
        """A host copy of `x`."""
        return np.array(x, copy=True)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """Uninitialised device memory."""
        return np.empty(shape, dtype=dtype)

    def supports(self, op: str, qtype: GGMLType | None = None) -> bool:
        """Every op; quantized weights of every type the reference can decode.

        ``matmul_q16`` (integer dot products) for the types int8_formats.FORMATS unpacks to
        8-bit integers; the model multiplies the others in float32.
        """
        if op not in OPS and op not in OPTIONAL_OPS:
            return False
        if qtype is None:
            return True
        if op in ("matmul_q16", "matmuls_q16", "rms_norm_matmuls_q16"):
            return int(qtype) in self._k.INT8_FORMATS
        return op in _QUANT_OPS and GGMLType(qtype) in self._k.DECODABLE

    def compile_step(self, calls, inputs: list[np.ndarray]):
        """The calls of a pass as one compiled call (realm.step_program; step.py): ``run(inputs)``
        swaps in the step's index arrays and runs every call in compiled code."""
        from realm_numba.step import NumbaStepProgram

        return NumbaStepProgram(self, calls, inputs)

    def synchronize(self) -> None:
        """Nothing to wait for: every kernel returns when its work is done."""

    # ------------------------------------------------------------------ weights

    def dequantize(self, w: QuantTensor, out: np.ndarray) -> None:
        """``out = float32(w)``, bit-identical to the reference."""
        CHECKS.dequantize(w, out)
        p = self._prepare(w)
        self._threads()
        self._k.dequantize_rows(int(p.qtype), p.data, out.reshape(p.data.shape[0], p.shape[-1]))

    def matmul(self, x: np.ndarray, w: QuantTensor | np.ndarray, out: np.ndarray) -> None:
        """``out [n, m] = x [n, k] @ w [m, k].T``, straight from the blocks of a quantized `w`.

        Batch-invariant: row ``i`` of `out` has the same bits whatever the other rows of `x`
        and however many there are, on any thread count (one kernel for every ``n``, see
        gemm.py), so a sequence's tokens do not depend on what shares its batch.
        """
        CHECKS.matmul(x, w, out)
        if np.may_share_memory(x, out):  # the kernels read x while writing out
            x = x.copy()
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        threads = self._threads()
        if not isinstance(w, QuantTensor):
            self._k.matmul_f32(x, w, out, threads)
            return
        p = self._prepare(w)
        if p.rows is not None:
            self._k.matmul_f32(x, p.rows, out, threads)
        else:
            self._k.matmul_quant(int(p.qtype), x, p.data, out, threads, p.lanes)

    def matmul_q16(self, x: np.ndarray, w: QuantTensor, out: np.ndarray) -> None:
        """``matmul`` of ``x`` rounded to 16-bit integer blocks, in integer dot products (gemm_q16.py).

        Batch-invariant like `matmul`.
        """
        CHECKS.matmul_q16(x, w, out)
        self._matmuls_q16(x, (w,), (out,))

    def matmuls_q16(self, x: np.ndarray, ws: list[QuantTensor], outs: list[np.ndarray]) -> None:
        """`matmul_q16` by 1 to 3 weights in one kernel: x rounded once, one parallel region."""
        CHECKS.matmuls_q16(x, ws, outs)
        self._matmuls_q16(x, ws, outs)

    def rms_norm_matmuls_q16(self, x: np.ndarray, weight: np.ndarray, eps: float,
                             ws: list[QuantTensor], outs: list[np.ndarray], gated: str | None = None) -> None:
        """`matmuls_q16` of ``rms_norm(x, weight, eps)``, then the ``gated`` activation: the
        matmul kernel computes the norm into its scratch just before the rounding (rms_norm's
        own code), and the activation op's kernel follows it (the same bits as the calls)."""
        CHECKS.rms_norm_matmuls_q16(x, weight, ws, outs, gated)
        self._matmuls_q16(x, ws, outs, weight, eps, gated)

    def _matmuls_q16(self, x: np.ndarray, ws, outs, norm: np.ndarray | None = None, eps: float = 0.0,
                     gated: str | None = None) -> None:
        plan = self._q16_plans.get(tuple(w.qtype for w in ws))
        if plan is None:
            plan = self._q16_plan(ws)
        if any(np.may_share_memory(x, out) for out in outs):
            x = x.copy()
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        codes, kinds = plan
        args = []
        for i in range(3):
            if i < len(ws):
                args += [self._prepare(ws[i]).data, outs[i]]
            else:
                args += [_NO_WEIGHT, np.empty((x.shape[0], 0), np.float32)]
        norm = self._no_freq_factors if norm is None else norm  # empty: no norm
        self._k.matmul_q16(x, norm, np.float32(eps), codes, kinds, *args, self._threads())
        if gated is not None:  # gate and up into the gate: the op's own kernel
            getattr(self._k, gated)(outs[0].reshape(-1), outs[1].reshape(-1), outs[0].reshape(-1))

    def _q16_plan(self, ws) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's type codes and unpacked-dot kinds for weights of these types (cached)."""
        for w in ws:
            if not self.supports("matmul_q16", w.qtype):
                raise BackendArgumentError(
                    f"matmul_q16: w {w.name!r} must be one of the types supports('matmul_q16') accepts, "
                    f"got {GGMLType(w.qtype).name}; use matmul for it")
        codes = np.zeros(3, np.int64)
        kinds = np.zeros(3, np.int64)
        for i, w in enumerate(ws):
            codes[i] = int(w.qtype)
            kinds[i] = self._k.unpacked_kind(self._k.INT8_FORMATS[int(w.qtype)])
        plan = (codes, kinds)
        self._q16_plans[tuple(w.qtype for w in ws)] = plan
        return plan

    def get_rows(self, w: QuantTensor | np.ndarray, ids: np.ndarray, out: np.ndarray) -> None:
        """``out [n, d] = w[ids]``, decoding only the rows asked for."""
        CHECKS.get_rows(w, ids, out)
        # The kernels check each id as they read it and return the first bad position.
        if isinstance(w, QuantTensor):
            p = self._prepare(w)
            bad = self._k.get_rows(int(p.qtype), p.data, ids, out)
        else:
            bad = self._k.take_rows(np.ascontiguousarray(w), ids, out)
        if bad >= 0:
            refuse_bad_id(w, w.shape[0], int(ids[bad]), int(bad))

    # ------------------------------------------------------------------ activations

    def rms_norm(self, x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> None:
        """``out = x / sqrt(mean(x**2, last axis) + eps) * weight``."""
        CHECKS.rms_norm(x, weight, out)
        d = x.shape[-1]
        self._k.rms_norm(x.reshape(-1, d), weight, np.float32(eps), out.reshape(-1, d))

    def rope(
        self,
        x: np.ndarray,
        positions: np.ndarray,
        n_rot: int,
        base: float,
        mode: RopeMode,
        out: np.ndarray,
        freq_factors: np.ndarray | None = None,
        freq_scale: float = 1.0,
    ) -> None:
        """Rotate the first `n_rot` dims of every head; see `realm.backend` for the angles."""
        CHECKS.rope(x, positions, n_rot, mode, out, freq_factors)
        if freq_factors is None:
            ff, has_ff = self._no_freq_factors, False
        else:
            ff, has_ff = freq_factors, True
        self._k.rope(x, positions, int(n_rot), np.float32(base), RopeMode(mode) == RopeMode.NEOX,
                     ff, has_ff, np.float32(freq_scale), out)

    def attention(
        self,
        q: np.ndarray,
        k_cache: np.ndarray,
        v_cache: np.ndarray,
        n_past: int,
        scale: float,
        out: np.ndarray,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None:
        """Causal (optionally windowed, soft-capped) softmax attention with grouped KV heads."""
        CHECKS.attention(q, k_cache, v_cache, n_past, out, window, softcap)
        n = q.shape[0]
        if n == 0:
            return
        # The whole cache is block 0 of a one-block table: one kernel for both ops.
        self._attend(q, k_cache, v_cache, self._one_block, len(k_cache), np.zeros(n, np.int32),
                     np.arange(n_past, n_past + n, dtype=np.int32), scale, out, window, softcap)

    def attention_paged(
        self,
        q: np.ndarray,
        k_pool: np.ndarray,
        v_pool: np.ndarray,
        block_table: np.ndarray,
        block_size: int,
        seq_ids: np.ndarray,
        positions: np.ndarray,
        scale: float,
        out: np.ndarray,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None:
        """`attention` for tokens of many sequences, each reading its own sequence's blocks.

        Token ``i`` attends to positions ``0..positions[i]`` of sequence ``seq_ids[i]``, whose
        keys and values sit at slot ``block_table[s, p // block_size] * block_size +
        p % block_size`` of the pools. Batch-invariant: a token's output bits do not depend
        on the other tokens of the call (one thread computes each head of a token in a fixed
        order, with the same kernel for any batch size).
        """
        CHECKS.attention_paged(q, k_pool, v_pool, block_table, block_size, seq_ids, positions, out,
                               window, softcap)
        self._check_paged_indices(block_table, block_size, len(k_pool), seq_ids, positions)
        if len(q) == 0:
            return
        self._attend(q, k_pool, v_pool, block_table, block_size, seq_ids, positions, scale, out,
                     window, softcap)

    def _attend(self, q, k_pool, v_pool, block_table, block_size, seq_ids, positions, scale, out,
                window, softcap) -> None:
        """Run the paged kernel on checked arguments (see attention.attention_paged)."""
        if np.may_share_memory(q, out):
            q = q.copy()
        n_keys, n_split, n_chunks = self._k.attention_plan(len(q), q.shape[1], k_pool.shape[1], q.shape[2],
                                                           positions, self._threads())
        self._k.attention_paged(q, k_pool, v_pool, block_table, int(block_size), seq_ids,
                                positions, np.float32(scale), int(window or 0),
                                np.float32(softcap or 0.0), out, n_keys, n_split, n_chunks)

    def set_rows(self, src: np.ndarray, dst: np.ndarray, rows: np.ndarray) -> None:
        """``dst[rows[i]] = src[i]`` (a paged KV write: ``rows`` are the tokens' slots)."""
        CHECKS.set_rows(src, dst, rows)
        if len(src) == 0:
            return
        # Rows are copied as bytes: one compiled kernel serves every dtype.
        flat_dst = dst.reshape(len(dst), -1).view(np.uint8)
        flat_src = np.ascontiguousarray(src).reshape(len(src), -1).view(np.uint8)
        if np.may_share_memory(flat_src, flat_dst):
            flat_src = flat_src.copy()
        bad = self._k.set_rows(flat_src, flat_dst, rows)
        if bad >= 0:
            refuse_bad_row(len(dst), int(rows[bad]), int(bad))
        if bad == -2:
            refuse_repeated_rows()

    def rope_write_kv(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, positions: np.ndarray,
                      n_rot: int, base: float, mode: RopeMode, k_pool: np.ndarray, v_pool: np.ndarray,
                      slots: np.ndarray, freq_factors: np.ndarray | None = None,
                      freq_scale: float = 1.0) -> None:
        """`rope` of q and k in place, then k and v into the pools' rows ``slots`` (the paged KV
        write), in one kernel that computes each token's angles once."""
        CHECKS.rope_write_kv(q, k, v, positions, n_rot, mode, k_pool, v_pool, slots, freq_factors)
        refuse_shared_pools("rope_write_kv", (q, k, v), (k_pool, v_pool))
        if len(q) == 0:
            return
        ff, has_ff = (self._no_freq_factors, False) if freq_factors is None else (freq_factors, True)
        bad = self._k.rope_write_kv(q, k, v, positions, int(n_rot), np.float32(base),
                                    RopeMode(mode) == RopeMode.NEOX, ff, has_ff, np.float32(freq_scale),
                                    k_pool, v_pool, slots)
        if bad >= 0:
            refuse_bad_row(len(k_pool), int(slots[bad]), int(bad), "rope_write_kv")
        if bad == -2:
            refuse_repeated_rows("rope_write_kv")

    def swiglu(self, gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
        """``out = silu(gate) * up`` with ``silu(g) = g / (1 + exp(-g))``."""
        CHECKS.gated("swiglu", gate, up, out)
        self._k.swiglu(gate.reshape(-1), up.reshape(-1), out.reshape(-1))

    def geglu(self, gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
        """``out = gelu_tanh(gate) * up`` (ggml's tanh approximation of GELU)."""
        CHECKS.gated("geglu", gate, up, out)
        self._k.geglu(gate.reshape(-1), up.reshape(-1), out.reshape(-1))

    def add(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """``out = a + b``; `b` has `a`'s shape or is one row ([d] or [1, d]) added to every row."""
        CHECKS.add(a, b, out)
        d = a.shape[-1] if a.ndim else 1
        self._k.add(a.reshape(-1, d), b.reshape(-1, d), out.reshape(-1, d))

    def scale(self, x: np.ndarray, s: float, out: np.ndarray) -> None:
        """``out = x * s``."""
        CHECKS.scale(x, out)
        self._k.scale(x.reshape(-1), np.float32(s), out.reshape(-1))

    def count_nonfinite(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out[r]`` = how many values of row ``r`` are NaN, +inf or -inf."""
        CHECKS.count_nonfinite(x, out)
        self._k.count_nonfinite(x, out)

    def argmax_rows(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out[r]`` = ``np.argmax(x[r])``: the first maximum of the row (its first NaN if any)."""
        CHECKS.argmax_rows(x, out)
        self._k.argmax_rows(x, out)

    def copy_rows(self, src: np.ndarray, dst: np.ndarray, start: int) -> None:
        """``dst[start:start+len(src)] = src`` (a KV-cache write)."""
        CHECKS.copy_rows(src, dst, start)
        if len(src):
            self._k.copy_rows(src.reshape(len(src), -1), dst.reshape(len(dst), -1), int(start))

    # ------------------------------------------------------------------ compilation

    def warmup(self, qtypes: Iterable[GGMLType] | None = None,
               progress: bool | None = None) -> dict[str, float]:
        """Compile (or load from numba's on-disk cache) the kernels a model run uses.

        ``qtypes``: the GGML types of the model's tensors (only their kernels are compiled);
        None compiles every kernel. ``progress``: None shows a bar on a terminal when a
        kernel really compiles (the cache was cold), True whenever one compiles, False
        never (nor the one-line compile message). Returns seconds per kernel group, so
        benchmarks can report compile time apart from run time.

        >>> NumbaBackend().warmup({GGMLType.Q4_1, GGMLType.F32})   # doctest: +SKIP
        """
        from realm_numba.warmup import warm_all

        return warm_all(self, qtypes, progress)
