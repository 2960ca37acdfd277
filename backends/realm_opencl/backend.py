"""The OpenCL backend (device ``"opencl"`` / ``"opencl:P:D"``): realm's ops as OpenCL kernels.

Kernel sources live in `realm.kernels` (one C dialect shared with CUDA) and argument checks in
`realm.op_checks`; this module picks kernels and launch sizes, and enqueues. Weights stay in
their GGML encoding on the device (`upload_quant` copies the raw bytes), so device memory is
about the file size.
Ops are asynchronous on one in-order queue; `download` and `synchronize` wait.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from realm.backend import OPS, Availability, QuantTensor, check_quant_upload, parse_device
from realm.errors import BackendUnavailableError
from realm.gguf.types import GGMLType
from realm.kernels import FORMATS, quant_program
from realm.op_checks import check_ids_in_range
from realm.quants import row_nbytes
from realm_opencl import devices
from realm_opencl._cl import cla
from realm_opencl.activations import ActivationOps
from realm_opencl.arrays import CHECKS, buf, byte_buf, check, next_pow2, round_up
from realm_opencl.runtime import PRELUDE, runtime_for

# Launch geometry; each must match the #define of the same name in the kernel source.
UNIT = 32  # elements per decoded unit (quants/unit.h)
MV_WG, MV_NX = 64, 4  # matvec.cl: work-group size, x rows per pass
MM_TILE, MM_SIDE = 64, 8  # matmul_tiled.cl: output tile side, work-items per side

_QUANT_OPS = frozenset({"dequantize", "matmul", "get_rows"})
_DEVICE_DTYPES = (np.dtype(np.float32), np.dtype(np.int32))


class OpenCLBackend(ActivationOps):
    """realm's ops as OpenCL kernels on one device (``"opencl"`` or ``"opencl:P:D"``).

    >>> be = OpenCLBackend("opencl")                    # doctest: +SKIP
    >>> be.device                                       # doctest: +SKIP
    'opencl:0:0'
    """

    name: ClassVar[str] = "opencl"

    @classmethod
    def probe(cls) -> Availability:
        """Every OpenCL platform's devices with their memory, or why there are none."""
        return devices.probe()

    def __init__(self, device: str = "opencl", n_threads: int | None = None) -> None:
        spec = parse_device(device or "opencl")
        if spec.backend != "opencl":
            raise BackendUnavailableError(f"the OpenCL backend runs 'opencl' devices, got {device!r}")
        p, d, cl_device = devices.select_device(spec.indices)
        self.device = f"opencl:{p}:{d}"
        self.n_threads = n_threads  # the OpenCL driver schedules its own threads
        self.runtime = runtime_for(p, d, cl_device)
        self.queue = self.runtime.queue
        # At most this many work-items share one weight row in matvec. GPUs want a row spread
        # over a work-group (more rows in flight); on CPUs work-groups are loops, and one or two
        # work-items per row run about twice as fast as 32 (PoCL, 2 cores, model shapes).
        self.matvec_max_tpr = MV_WG if devices.is_gpu(cl_device) else 2
        self._inv_freq: dict[tuple[int, float], cla.Array] = {}

    # ------------------------------------------------------------------ memory

    def upload(self, host: np.ndarray) -> cla.Array:
        """A device copy of a float32 or int32 host array."""
        host = np.asarray(host)
        check(host.dtype in _DEVICE_DTYPES,
              f"the OpenCL backend keeps float32 and int32 arrays, got {host.dtype}")
        return cla.to_device(self.queue, np.ascontiguousarray(host))

    def upload_quant(self, raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...],
                     name: str = "") -> QuantTensor:
        """Copy a tensor's raw GGML bytes to the device as they are (no dequantized copy)."""
        raw, qtype, shape, _ = check_quant_upload(raw, qtype, shape, name, FORMATS, "OpenCL")
        data = cla.to_device(self.queue, np.ascontiguousarray(raw).reshape(-1))
        return QuantTensor(data, qtype, shape, name)

    def download(self, x: cla.Array) -> np.ndarray:
        """A host copy of `x` (waits for the ops that write it)."""
        check(isinstance(x, cla.Array), f"download needs a pyopencl array, got {type(x).__name__}")
        return x.get(queue=self.queue)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> cla.Array:
        """Uninitialised device memory."""
        check(np.dtype(dtype) in _DEVICE_DTYPES,
              f"the OpenCL backend keeps float32 and int32 arrays, got {np.dtype(dtype)}")
        return cla.empty(self.queue, tuple(int(s) for s in shape), dtype)

    def supports(self, op: str, qtype: GGMLType | None = None) -> bool:
        """Every op; quantized weights of every type `realm.kernels.FORMATS` decodes."""
        if op not in OPS:
            return False
        if qtype is None:
            return True
        return op in _QUANT_OPS and GGMLType(qtype) in FORMATS

    def synchronize(self) -> None:
        """Wait for every enqueued op."""
        self.queue.finish()

    # ------------------------------------------------------------------ weights

    def _quant_kernels(self, qtype: GGMLType) -> dict[str, Any]:
        return self.runtime.kernels(f"quant:{qtype.name}", lambda: quant_program(qtype, PRELUDE))

    @staticmethod
    def _check_quant(w: QuantTensor, op: str) -> None:
        check(isinstance(w.data, cla.Array) and w.data.dtype == np.uint8,
              f"{op}: tensor {w.name!r} was not uploaded by the OpenCL backend "
              f"(its data is {type(w.data).__name__})")

    def _weight(self, w: QuantTensor | cla.Array, op: str) -> tuple[GGMLType, tuple, int, int, int]:
        """(qtype, buffer args, bytes per row, rows, row length) of a checked 2-D weight."""
        if isinstance(w, QuantTensor):
            self._check_quant(w, op)
            rows, k = w.shape
            return w.qtype, byte_buf(w.data), row_nbytes(w.qtype, k), rows, k
        rows, k = w.shape
        return GGMLType.F32, byte_buf(w), 4 * k, rows, k

    def dequantize(self, w: QuantTensor, out: cla.Array) -> None:
        """``out = float32(w)`` for a tensor of any rank, bit-exact with the reference."""
        CHECKS.dequantize(w, out)
        self._check_quant(w, "dequantize")
        k = w.shape[-1]
        rows = int(np.prod(w.shape[:-1], dtype=np.int64))
        if rows * k == 0:
            return
        n_units = -(-k // UNIT)
        kernel = self._quant_kernels(w.qtype)["dequantize"]
        self.runtime.launch(kernel, (round_up(n_units, UNIT), rows), (UNIT, 1), *byte_buf(w.data),
                            np.int64(row_nbytes(w.qtype, k)), np.int32(k), np.int32(n_units),
                            *buf(out))

    def matmul(self, x: cla.Array, w: QuantTensor | cla.Array, out: cla.Array) -> None:
        """``out [n, m] = x [n, k] @ w [m, k].T``, straight from w's blocks."""
        CHECKS.matmul(x, w, out)
        n, k = x.shape
        qtype, w_args, row_bytes, m, _ = self._weight(w, "matmul")
        if n * m == 0:
            return
        kernels = self._quant_kernels(qtype)
        common = (*w_args, np.int64(row_bytes), np.int32(k), np.int32(m), *buf(x), np.int32(n),
                  *buf(out))
        if n <= MV_NX:
            tpr = min(self.matvec_max_tpr, next_pow2(-(-k // UNIT)))  # work-items per row
            global_size = (round_up(m, MV_WG // tpr) * tpr, -(-n // MV_NX))
            self.runtime.launch(kernels["matvec"], global_size, (MV_WG, 1), *common, np.int32(tpr))
        else:
            global_size = (-(-m // MM_TILE) * MM_SIDE, -(-n // MM_TILE) * MM_SIDE)
            self.runtime.launch(kernels["matmul_tiled"], global_size, (MM_SIDE, MM_SIDE), *common)

    def get_rows(self, w: QuantTensor | cla.Array, ids: cla.Array, out: cla.Array) -> None:
        """``out [n, d] = w[ids]``, decoding only the rows asked for."""
        CHECKS.get_rows(w, ids, out)
        qtype, w_args, row_bytes, n_rows, d = self._weight(w, "get_rows")
        if ids.shape[0] * d == 0:
            return
        # A handful of ints: checked on the host, never clamped in the kernel.
        check_ids_in_range(w, n_rows, ids.get(queue=self.queue))
        n_units = -(-d // UNIT)
        kernel = self._quant_kernels(qtype)["get_rows"]
        self.runtime.launch(kernel, (round_up(n_units, UNIT), ids.shape[0]), (UNIT, 1), *w_args,
                            np.int64(row_bytes), np.int32(d), np.int32(n_units), *buf(ids),
                            *buf(out))
