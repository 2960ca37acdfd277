"""The backend contract, device strings and the backend registry.

A backend owns device memory and runs ops; the model layer never touches
device memory itself. Backends are found through the ``realm.backends``
entry-point group, the same way a third-party package would register one::

    [project.entry-points."realm.backends"]
    cpu = "realm_numba:NumbaBackend"

Shapes are numpy-ordered (innermost dimension last). Activations are float32.

Op semantics (the numpy reference backend is the executable definition):

- ``matmul(x, w, out)``: ``x [n, k]``, ``w [m, k]`` (a ``QuantTensor`` or a float32
  array), ``out [n, m] = x @ w.T``. A quantized ``w`` is multiplied straight from its
  blocks: never a full dequantized copy.
- ``get_rows(w, ids, out)``: ``w [V, d]``, ``ids`` int32 ``[n]``, ``out [n, d] = w[ids]``.
- ``rms_norm(x, weight, eps, out)``: over the last axis of ``x [..., d]``;
  ``out = x / sqrt(mean(x**2) + eps) * weight``.
- ``rope(x, positions, n_rot, base, mode, out, freq_factors=None, freq_scale=1.0)``:
  ``x [n, heads, head_dim]``, ``positions`` int32 ``[n]``; rotates the first ``n_rot``
  dims of each head by angle ``pos * freq_scale * base**(-2i/n_rot) / freq_factors[i]``.
  ``ROPE_NORMAL`` rotates adjacent pairs ``(2i, 2i+1)``; ``ROPE_NEOX`` rotates
  ``(i, i + n_rot/2)``. Dims past ``n_rot`` pass through.
- ``attention(q, k_cache, v_cache, n_past, scale, out, window=None, softcap=None)``:
  ``q [n, n_head, hd]`` holds the queries of positions ``n_past .. n_past+n-1``;
  ``k_cache, v_cache [ctx, n_kv_head, hd]`` already hold keys/values up to
  ``n_past+n``. Query head ``h`` reads kv head ``h // (n_head // n_kv_head)``.
  Scores are ``scale * q.k``, then ``softcap * tanh(s / softcap)`` when softcap is set;
  causal mask (key pos <= query pos) and, with ``window``, only keys with
  ``query_pos - key_pos < window``. ``out [n, n_head, hd]``.
- ``swiglu(gate, up, out)``: ``silu(gate) * up``; ``geglu``: ``gelu_tanh(gate) * up``.
- ``add(a, b, out)``: ``a + b``; ``b`` has ``a``'s shape or is one row broadcast over ``a``'s rows.
- ``scale(x, s, out)``: ``x * s`` for a Python float ``s``.
- ``copy_rows(src, dst, start)``: ``dst[start:start+len(src)] = src`` (KV cache writes).
- ``set_rows(src, dst, rows)``: ``dst[rows[i]] = src[i]`` for int32 ``rows [n]``, distinct and
  inside ``dst`` (paged KV writes: ``rows`` are the tokens' slots in the pool).
- ``attention_paged(q, k_pool, v_pool, block_table, block_size, seq_ids, positions, scale, out,
  window=None, softcap=None)``: ``attention`` for tokens of many sequences in one call. Token
  ``i`` is the query at position ``positions[i]`` of sequence ``seq_ids[i]``; it attends to that
  sequence's positions ``0..positions[i]`` (within ``window``), whose keys/values sit at slot
  ``block_table[s, p // block_size] * block_size + p % block_size`` of ``k_pool``/``v_pool``
  ``[n_slots, n_kv_head, hd]``. ``block_table`` is int32 ``[n_seqs, max_blocks]``; entries a
  token does not read are ignored. A token's result must not depend on the other tokens of
  the call (batch invariance: a request's output does not depend on what else runs).
- ``dequantize(w, out)``: the whole tensor as float32 (tests and tools, not the hot path).
- ``matmul_q16(x, w, out)`` (optional, see `OPTIONAL_OPS`): ``matmul`` with ``x`` first
  rounded to 16-bit integer blocks of 32 (`realm.quants.activations.quantize_q16`) and ``w``
  a ``QuantTensor`` of a block type; ``k`` a multiple of 32. A backend computes it with
  integer dot products.
- ``matmuls_q16(x, ws, outs)`` (optional): ``matmul_q16(x, ws[i], outs[i])`` for 1 to 3
  weights sharing one ``x`` (Q/K/V, gate/up), in one call: ``x`` is rounded once. The
  outputs are distinct arrays.
- ``rms_norm_matmuls_q16(x, weight, eps, ws, outs, gated=None)`` (optional): ``matmuls_q16``
  of ``rms_norm(x, weight, eps)``, the norm folded into the rounding of its rows; ``x`` is
  left as it was and the normed rows are written nowhere. ``gated`` ``"swiglu"`` or
  ``"geglu"`` (with ``ws`` a gate and an up weight) then runs that op on the two outputs
  into the first: ``gated(outs[0], outs[1], outs[0])``, the FFN's input half in one call.
- ``rope_write_kv(q, k, v, positions, n_rot, base, mode, k_pool, v_pool, slots,
  freq_factors=None, freq_scale=1.0)`` (optional): ``rope`` of ``q`` and of ``k`` in place,
  then ``set_rows(k, k_pool, slots)`` and ``set_rows(v, v_pool, slots)``. Bad ``slots`` are
  refused before anything is written.
- ``count_nonfinite(x, out)`` (optional): ``out[r]`` (int32) the number of NaN and infinite
  values in row ``r`` of ``x [rows, d]``: the logits' check inside a step, where the rows
  are still in the caches.
- ``argmax_rows(x, out)`` (optional): ``out[r]`` (int32) = ``np.argmax(x[r])``, the first
  maximum of row ``r`` of ``x [rows, d]`` (its first NaN where it has one): a greedy
  token picked inside the step, so the logits need not leave the device.
- ``compile_step(calls, inputs)`` (optional): a program running a recorded list of step-op
  calls (`realm.step_program`) in one go; ``program.run(new_inputs)`` must equal
  `realm.step_program.run_calls` with ``new_inputs`` in place of ``inputs`` (the pass's index
  arrays, token ids included: same dtypes and shapes, a block table of any number of rows and
  columns). The new
  inputs are host arrays: the program copies them where its calls read them.

Row-wise ops (rms_norm, rope, add, scale, swiglu, geglu) accept an ``out`` that is one of
their inputs (the model runs them in place); matmul, get_rows and attention never get that.

Device arrays are whatever the backend's native array is (numpy, cupy, pyopencl);
the model only relies on ``.shape``, ``.dtype``, ``x[:n]`` (a view of leading rows)
and ``x.reshape(...)`` of a contiguous array (a view).
"""

from __future__ import annotations

import enum
import functools
import importlib
import re
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from realm.errors import (
    BackendArgumentError,
    BackendUnavailableError,
    InvalidDeviceError,
    UnsupportedQuantError,
)
from realm.gguf.types import GGMLType, tensor_nbytes, type_traits

ENTRY_POINT_GROUP = "realm.backends"

# The order "auto" tries backends in: GPUs first, then the fast CPU backend, then the reference.
AUTO_ORDER = ("cuda", "opencl", "cpu", "numpy")


class RopeMode(enum.IntEnum):
    NORMAL = 0  # rotate adjacent pairs (llama, mistral)
    NEOX = 2  # rotate the two halves of each head (qwen, gemma); the value is ggml's


DeviceArray = Any  # the backend's native array type (numpy.ndarray, cupy.ndarray, ...)


@dataclass
class QuantTensor:
    """A weight kept in its GGML encoding on the device.

    ``data`` is the backend's buffer of the raw blocks (for row-major ``shape``
    ``[rows, cols]`` each row is ``cols / block_size`` consecutive blocks);
    ``shape`` is the logical shape in elements, numpy order.
    """

    data: Any
    qtype: GGMLType
    shape: tuple[int, ...]
    name: str = ""

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.qtype, self.shape)


@dataclass(frozen=True)
class DeviceInfo:
    """One device a backend can run on, as `realm backends` lists it."""

    device: str  # the device string that selects it, e.g. "opencl:0:1"
    name: str
    kind: str = "cpu"  # "cpu" or "gpu": "auto" only picks OpenCL on a GPU
    memory_bytes: int | None = None


@dataclass(frozen=True)
class Availability:
    """What a backend's cheap probe found."""

    available: bool
    devices: tuple[DeviceInfo, ...] = ()
    reason: str = ""  # why not available, and how to fix it


@runtime_checkable
class Backend(Protocol):
    """What every backend implements. See the module docstring for op semantics."""

    name: ClassVar[str]

    @classmethod
    def probe(cls) -> Availability: ...

    def __init__(self, device: str = "", n_threads: int | None = None) -> None: ...

    def upload(self, host: np.ndarray) -> DeviceArray: ...
    def upload_quant(
        self, raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...], name: str = ""
    ) -> QuantTensor: ...
    def download(self, x: DeviceArray) -> np.ndarray: ...
    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> DeviceArray: ...
    def supports(self, op: str, qtype: GGMLType | None = None) -> bool: ...

    def dequantize(self, w: QuantTensor, out: DeviceArray) -> None: ...
    def matmul(self, x: DeviceArray, w: QuantTensor | DeviceArray, out: DeviceArray) -> None: ...
    # optional (OPTIONAL_OPS): matmul_q16(x, w: QuantTensor, out), matmuls_q16(x, ws, outs),
    # rms_norm_matmuls_q16(x, weight, eps, ws, outs, gated), rope_write_kv(q, k, v, positions, n_rot,
    # base, mode, k_pool, v_pool, slots, freq_factors, freq_scale),
    # count_nonfinite(x, out), argmax_rows(x, out), compile_step(calls, inputs) -> a program with run(inputs)
    def get_rows(self, w: QuantTensor | DeviceArray, ids: DeviceArray, out: DeviceArray) -> None: ...
    def rms_norm(self, x: DeviceArray, weight: DeviceArray, eps: float, out: DeviceArray) -> None: ...
    def rope(
        self,
        x: DeviceArray,
        positions: DeviceArray,
        n_rot: int,
        base: float,
        mode: RopeMode,
        out: DeviceArray,
        freq_factors: DeviceArray | None = None,
        freq_scale: float = 1.0,
    ) -> None: ...
    def attention(
        self,
        q: DeviceArray,
        k_cache: DeviceArray,
        v_cache: DeviceArray,
        n_past: int,
        scale: float,
        out: DeviceArray,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None: ...
    def swiglu(self, gate: DeviceArray, up: DeviceArray, out: DeviceArray) -> None: ...
    def geglu(self, gate: DeviceArray, up: DeviceArray, out: DeviceArray) -> None: ...
    def add(self, a: DeviceArray, b: DeviceArray, out: DeviceArray) -> None: ...
    def scale(self, x: DeviceArray, s: float, out: DeviceArray) -> None: ...
    def copy_rows(self, src: DeviceArray, dst: DeviceArray, start: int) -> None: ...
    def set_rows(self, src: DeviceArray, dst: DeviceArray, rows: DeviceArray) -> None: ...
    def attention_paged(
        self,
        q: DeviceArray,
        k_pool: DeviceArray,
        v_pool: DeviceArray,
        block_table: DeviceArray,
        block_size: int,
        seq_ids: DeviceArray,
        positions: DeviceArray,
        scale: float,
        out: DeviceArray,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None: ...
    def synchronize(self) -> None: ...

    # Optional, found with getattr (ggml marks its optional members the same way):
    # ``warmup(qtypes, progress)`` compiles the kernels a model with tensors of ``qtypes``
    # will run, so `realm.load` pays a first-run compile up front and can show it, instead of
    # the first generated token paying it in silence. ``progress`` is load()'s argument.
    # ``release_threads()`` says the calling thread launches no kernels for a while, so a
    # backend whose worker threads belong to the launching thread (numba on GNU OpenMP)
    # can free them: `realm.load` calls it, since the engine's own thread runs the model, and
    # so does `Engine.submit`, for a caller that ran the research API on its own thread.


OPS = (
    "dequantize",
    "matmul",
    "get_rows",
    "rms_norm",
    "rope",
    "attention",
    "swiglu",
    "geglu",
    "add",
    "scale",
    "copy_rows",
    "set_rows",
    "attention_paged",
)

# Ops a backend may have, and the model layer uses where `supports` says so; checked by the
# conformance suite like the others. The matmuls are defined by the numpy reference;
# ``compile_step(calls, inputs)`` by `realm.step_program.run_calls` (the calls one by one).
# ``matmul_q16(x, w, out)``: ``matmul`` of x rounded to 16-bit integer blocks
# (`realm.quants.activations.quantize_q16`) by a quantized ``w``, which a backend runs with
# integer dot products. ``k`` must be a multiple of 32.
# ``matmuls_q16(x, ws, outs)``: ``matmul_q16`` of one x by 1 to 3 weights in one call.
# The fused ops are defined by the ops they fuse (the module docstring), and a backend's must
# give the bits of its own unfused calls: ``rms_norm_matmuls_q16`` (the norm before a
# matmul's rounding) and ``rope_write_kv`` (RoPE of q and k, then the keys' and values' writes).
# ``count_nonfinite`` and ``argmax_rows`` are defined by the reference's numpy.
OPTIONAL_OPS = ("matmul_q16", "matmuls_q16", "rms_norm_matmuls_q16", "rope_write_kv", "count_nonfinite",
                "argmax_rows", "compile_step")


def check_quant_upload(
    raw: np.ndarray,
    qtype: GGMLType,
    shape: tuple[int, ...],
    name: str,
    supported: frozenset[GGMLType] | set[GGMLType],
    backend: str,
) -> tuple[np.ndarray, GGMLType, tuple[int, ...], int]:
    """Check an `upload_quant` call the same way on every backend.

    Returns ``(raw as a flat uint8 array (no copy), qtype, shape, bytes per row)``; raises
    `UnsupportedQuantError` for a type the backend cannot decode and `BackendArgumentError`
    for a shape that is not whole blocks or bytes that do not match it.
    """
    qtype = GGMLType(qtype)
    shape = tuple(int(d) for d in shape)
    what = f"tensor {name!r}" if name else "tensor"
    if qtype not in supported:
        raise UnsupportedQuantError(
            f"{what} has type {qtype.name}, which the {backend} backend cannot decode"
        )
    traits = type_traits(qtype)
    if not shape or shape[-1] % traits.block_size:
        raise BackendArgumentError(
            f"{what} ({qtype.name}) has shape {shape}: rows must be a multiple of {traits.block_size}"
        )
    raw = np.asarray(raw)
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    row_bytes = shape[-1] // traits.block_size * traits.type_size
    if raw.dtype != np.uint8 or raw.size != n_rows * row_bytes:
        raise BackendArgumentError(
            f"{what} ({qtype.name}, shape {shape}) needs {n_rows * row_bytes} bytes of uint8, "
            f"got {raw.size} of {raw.dtype}"
        )
    return raw.reshape(-1), qtype, shape, row_bytes


# ----------------------------------------------------------------------------- device strings

_DEVICE_RE = re.compile(r"^(?P<kind>[a-z_][a-z0-9_]*)(?::(?P<rest>[0-9:]+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string: the backend name and the device indices after it."""

    backend: str
    indices: tuple[int, ...] = ()

    def __str__(self) -> str:
        return ":".join([self.backend, *map(str, self.indices)])


def parse_device(device: str) -> DeviceSpec:
    """Parse ``"cuda:1"`` into ``DeviceSpec("cuda", (1,))``.

    >>> parse_device("opencl:0:1")
    DeviceSpec(backend='opencl', indices=(0, 1))
    """
    if not isinstance(device, str):
        raise InvalidDeviceError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    m = _DEVICE_RE.match(device.strip().lower())
    if not m:
        raise InvalidDeviceError(
            f"bad device string {device!r}: expected 'auto', 'numpy', 'cpu', 'cuda', 'cuda:N', "
            "'opencl' or 'opencl:P:D'"
        )
    rest = m.group("rest")
    parts = rest.split(":") if rest else []
    if any(p == "" for p in parts):
        raise InvalidDeviceError(f"bad device string {device!r}: empty index")
    indices = tuple(int(p) for p in parts)
    return DeviceSpec(m.group("kind"), indices)


# ----------------------------------------------------------------------------- registry


@dataclass
class BackendEntry:
    """One registered backend: its entry point and, once probed, its availability."""

    name: str
    target: str  # "module:Class"
    _cls: type | None = field(default=None, repr=False)
    _availability: Availability | None = field(default=None, repr=False)

    def load_class(self) -> type:
        if self._cls is None:
            module_name, _, attr = self.target.partition(":")
            module = importlib.import_module(module_name)
            self._cls = getattr(module, attr)
        return self._cls

    def availability(self) -> Availability:
        """Probe once and remember; a plugin that crashes is reported, not raised."""
        if self._availability is None:
            try:
                self._availability = self.load_class().probe()
            except Exception as exc:  # a broken plugin must not take realm down
                warnings.warn(
                    f"realm backend {self.name!r} ({self.target}) failed to load: {exc!r}", stacklevel=2
                )
                self._availability = Availability(False, reason=f"the plugin failed to load: {exc!r}")
        return self._availability


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, BackendEntry]:
    found: dict[str, BackendEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, BackendEntry(ep.name, ep.value))
    return found


def registered_backends() -> dict[str, BackendEntry]:
    """All backends registered through entry points, by name (not probed yet)."""
    return dict(_registry())


@dataclass(frozen=True)
class BackendStatus:
    """One line of `realm.backends()`."""

    name: str
    available: bool
    devices: tuple[DeviceInfo, ...]
    reason: str


def backends() -> list[BackendStatus]:
    """Every registered backend with its devices, or the reason it is unavailable.

    >>> [b.name for b in backends() if b.available]   # doctest: +SKIP
    ['cpu', 'numpy', 'opencl']
    """
    out = []
    for name, entry in sorted(_registry().items()):
        a = entry.availability()
        out.append(BackendStatus(name, a.available, a.devices, a.reason))
    return out


_INSTALL_HINTS = {
    "cpu": "pip install numba (the 'cpu' extra of realm)",
    "opencl": "pip install pyopencl (the 'opencl' extra of realm) and install an OpenCL driver "
    "(e.g. Debian's pocl-opencl-icd)",
}


# Device names realm knows that this version has no backend for: say so and offer what works
# instead, rather than a bare "not registered".
_NOT_SHIPPED = {
    "cuda": "the CUDA backend (realm_cupy) is not part of this realm version; for an NVIDIA GPU, "
    "use device 'opencl' through NVIDIA's OpenCL driver (docs/opencl.md)",
}


def _unregistered(name: str, registry: dict[str, BackendEntry]) -> str:
    """Why no backend answers to ``name``, what does here, and how a backend gets registered."""
    if name in _NOT_SHIPPED:
        why = f"no backend named {name!r} is registered: {_NOT_SHIPPED[name]}"
    elif name in _INSTALL_HINTS:
        why = f"no backend named {name!r} is registered; to get it: {_INSTALL_HINTS[name]}"
    else:
        why = f"no backend named {name!r} is registered"
    devices = [d.device for _, e in sorted(registry.items()) for d in e.availability().devices]
    return (
        f"{why}. Registered backends: {', '.join(sorted(registry)) or 'none'}"
        f" (devices here: {', '.join(devices) or 'none'}). A backend package registers itself "
        f"under the {ENTRY_POINT_GROUP!r} entry-point group (docs/architecture.md)"
    )


def resolve_device(device: str = "auto") -> tuple[BackendEntry, DeviceSpec]:
    """Pick the backend a device string names; raise `BackendUnavailableError` if it can't run."""
    spec = parse_device(device)
    registry = _registry()
    if spec.backend == "auto":
        if spec.indices:
            raise BackendUnavailableError(f"device 'auto' takes no index, got {device!r}")
        reasons = []
        for name in AUTO_ORDER:
            entry = registry.get(name)
            if entry is None:
                continue
            a = entry.availability()
            if a.available and (name != "opencl" or any(d.kind == "gpu" for d in a.devices)):
                return entry, DeviceSpec(name)
            reasons.append(f"{name}: {a.reason or 'no GPU device'}")
        raise BackendUnavailableError("no backend is available for device 'auto': " + "; ".join(reasons))
    entry = registry.get(spec.backend)
    if entry is None:
        raise BackendUnavailableError(_unregistered(spec.backend, registry))
    a = entry.availability()
    if not a.available:
        # a probe's reason usually says how to fix it already; add realm's hint only where not
        hint = _INSTALL_HINTS.get(spec.backend, "") if "pip install" not in a.reason else ""
        raise BackendUnavailableError(
            f"backend {spec.backend!r} is not available: {a.reason}" + (f"; to fix: {hint}" if hint else "")
        )
    return entry, spec


def get_backend(device: str = "auto", n_threads: int | None = None) -> Backend:
    """Instantiate the backend for a device string, e.g. ``get_backend("cuda:1")``."""
    entry, spec = resolve_device(device)
    cls = entry.load_class()
    return cls(device=str(spec), n_threads=n_threads)
