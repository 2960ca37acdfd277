"""A backend over `realm.kernels` on any device runtime: memory, weights and the op dispatch.

The generic part of every device backend, written once: argument checks, launch geometry,
choosing matvec or tiled matmul, per-format program selection. A backend class gives it a
`DeviceRuntime` (allocate, copy, compile, launch) and its probe, and nothing else. Weights
stay in their GGML encoding on the device (`upload_quant` copies the raw bytes), so device
memory is about the file size. Ops are queued in order; `download` and `synchronize` wait.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realm.backend import OPS, QuantTensor, check_quant_upload
from realm.gguf.types import GGMLType
from realm.kernels import FORMATS, quant_program
from realm.kernels.device_activations import ActivationOps, check, next_pow2, round_up
from realm.kernels.runtime import DeviceRuntime
from realm.op_checks import OpChecks, check_ids_in_range
from realm.quants import row_nbytes

# Launch geometry; each must match the #define of the same name in the kernel source.
UNIT = 32  # elements per decoded unit (quants/unit.h)
MV_WG, MV_NX = 64, 4  # matvec.cl: work-group size, x rows per pass
MM_TILE, MM_SIDE = 64, 8  # matmul_tiled.cl: output tile side, work-items per side

_QUANT_OPS = frozenset({"dequantize", "matmul", "get_rows"})
# The optional ops it offers (realm.backend.OPTIONAL_OPS): the logits' checks, so that the
# logits of a greedy step need not be copied to the host.
_OPTIONAL_OPS = frozenset({"count_nonfinite", "argmax_rows"})
_DEVICE_DTYPES = (np.dtype(np.float32), np.dtype(np.int32))


class DeviceBackend(ActivationOps):
    """realm's ops as `realm.kernels` programs on one device of `runtime`."""

    device: str
    n_threads: int | None

    def __init__(self, runtime: DeviceRuntime) -> None:
        self.runtime = runtime
        # Every kernel takes its buffers flat, so every array must be C-contiguous.
        self.checks = OpChecks(
            runtime.array_type, runtime.array_description, contiguous_inputs=True, contiguous_outputs=True
        )
        # At most this many work-items share one weight row in matvec. GPUs want a row spread
        # over a work-group (more rows in flight); on CPUs work-groups are loops, and one or two
        # work-items per row run about twice as fast as 32 (PoCL, 2 cores, model shapes).
        self.matvec_max_tpr = MV_WG if runtime.is_gpu else 2
        self._inv_freq: dict[tuple[int, float], Any] = {}

    # ------------------------------------------------------------------ memory

    def _check_dtype(self, dtype: np.dtype) -> None:
        check(
            dtype in _DEVICE_DTYPES,
            f"the {self.runtime.label} backend keeps float32 and int32 arrays, got {dtype}",
        )

    def upload(self, host: np.ndarray) -> Any:
        """A device copy of a float32 or int32 host array."""
        host = np.asarray(host)
        self._check_dtype(host.dtype)
        return self.runtime.to_device(np.ascontiguousarray(host))

    def upload_quant(
        self, raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...], name: str = ""
    ) -> QuantTensor:
        """Copy a tensor's raw GGML bytes to the device as they are (no dequantized copy)."""
        raw, qtype, shape, _ = check_quant_upload(raw, qtype, shape, name, FORMATS, self.runtime.label)
        data = self.runtime.to_device(np.ascontiguousarray(raw).reshape(-1))
        return QuantTensor(data, qtype, shape, name)

    def download(self, x: Any) -> np.ndarray:
        """A host copy of `x` (waits for the ops that write it)."""
        check(
            isinstance(x, self.runtime.array_type),
            f"download needs a {self.runtime.array_description}, got {type(x).__name__}",
        )
        return self.runtime.to_host(x)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> Any:
        """Uninitialised device memory."""
        self._check_dtype(np.dtype(dtype))
        return self.runtime.empty(tuple(int(s) for s in shape), np.dtype(dtype))

    def supports(self, op: str, qtype: GGMLType | None = None) -> bool:
        """Every op, and the optional logits' checks (`_OPTIONAL_OPS`); quantized weights of
        every type `realm.kernels.FORMATS` decodes."""
        if op in _OPTIONAL_OPS:
            return qtype is None
        if op not in OPS:
            return False
        if qtype is None:
            return True
        return op in _QUANT_OPS and GGMLType(qtype) in FORMATS

    def synchronize(self) -> None:
        """Wait for every queued op."""
        self.runtime.synchronize()

    # ------------------------------------------------------------------ weights

    def _quant_kernels(self, qtype: GGMLType) -> dict[str, Any]:
        prelude = self.runtime.prelude
        return self.runtime.kernels(f"quant:{qtype.name}", lambda: quant_program(qtype, prelude))

    def _check_quant(self, w: QuantTensor, op: str) -> None:
        check(
            isinstance(w.data, self.runtime.array_type) and w.data.dtype == np.uint8,
            f"{op}: tensor {w.name!r} was not uploaded by the {self.runtime.label} backend "
            f"(its data is {type(w.data).__name__})",
        )

    def _weight(self, w: QuantTensor | Any, op: str) -> tuple[GGMLType, tuple, int, int, int]:
        """(qtype, buffer args, bytes per row, rows, row length) of a checked 2-D weight."""
        if isinstance(w, QuantTensor):
            self._check_quant(w, op)
            rows, k = w.shape
            return w.qtype, self.runtime.byte_buffer(w.data), row_nbytes(w.qtype, k), rows, k
        rows, k = w.shape
        return GGMLType.F32, self.runtime.byte_buffer(w), 4 * k, rows, k

    def dequantize(self, w: QuantTensor, out: Any) -> None:
        """``out = float32(w)`` for a tensor of any rank, bit-exact with the reference."""
        self.checks.dequantize(w, out)
        self._check_quant(w, "dequantize")
        k = w.shape[-1]
        rows = int(np.prod(w.shape[:-1], dtype=np.int64))
        if rows * k == 0:
            return
        n_units = -(-k // UNIT)
        kernel = self._quant_kernels(w.qtype)["dequantize"]
        self.runtime.launch(
            kernel,
            (round_up(n_units, UNIT), rows),
            (UNIT, 1),
            *self.runtime.byte_buffer(w.data),
            np.int64(row_nbytes(w.qtype, k)),
            np.int32(k),
            np.int32(n_units),
            *self.runtime.buffer(out),
        )

    def matmul(self, x: Any, w: QuantTensor | Any, out: Any) -> None:
        """``out [n, m] = x [n, k] @ w [m, k].T``, straight from w's blocks."""
        self.checks.matmul(x, w, out)
        n, k = x.shape
        qtype, w_args, row_bytes, m, _ = self._weight(w, "matmul")
        if n * m == 0:
            return
        kernels = self._quant_kernels(qtype)
        buffer = self.runtime.buffer
        common = (
            *w_args,
            np.int64(row_bytes),
            np.int32(k),
            np.int32(m),
            *buffer(x),
            np.int32(n),
            *buffer(out),
        )
        if n <= MV_NX:
            tpr = min(self.matvec_max_tpr, next_pow2(-(-k // UNIT)))  # work-items per row
            global_size = (round_up(m, MV_WG // tpr) * tpr, -(-n // MV_NX))
            self.runtime.launch(kernels["matvec"], global_size, (MV_WG, 1), *common, np.int32(tpr))
        else:
            global_size = (-(-m // MM_TILE) * MM_SIDE, -(-n // MM_TILE) * MM_SIDE)
            self.runtime.launch(kernels["matmul_tiled"], global_size, (MM_SIDE, MM_SIDE), *common)

    def get_rows(self, w: QuantTensor | Any, ids: Any, out: Any) -> None:
        """``out [n, d] = w[ids]``, decoding only the rows asked for."""
        self.checks.get_rows(w, ids, out)
        qtype, w_args, row_bytes, n_rows, d = self._weight(w, "get_rows")
        if ids.shape[0] * d == 0:
            return
        # A handful of ints: checked on the host, never clamped in the kernel.
        check_ids_in_range(w, n_rows, self.runtime.to_host(ids))
        n_units = -(-d // UNIT)
        kernel = self._quant_kernels(qtype)["get_rows"]
        self.runtime.launch(
            kernel,
            (round_up(n_units, UNIT), ids.shape[0]),
            (UNIT, 1),
            *w_args,
            np.int64(row_bytes),
            np.int32(d),
            np.int32(n_units),
            *self.runtime.buffer(ids),
            *self.runtime.buffer(out),
        )
