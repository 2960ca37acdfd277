"""The OpenCL runtime: one context per device, its in-order queue, and the programs built for it.

This is all of the OpenCL backend that is OpenCL (`realm.kernels.runtime.DeviceRuntime`);
the ops themselves are `realm.kernels.device_backend`'s. Programs are built once per context,
the first time an op needs them, and kept with their
kernel objects: later calls only set arguments and enqueue. Every backend instance on the
same device shares the runtime, so a second ``OpenCLBackend("opencl:0:0")`` compiles nothing.
pyopencl also keeps built binaries on disk, so a new process skips most compile time.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from realm.errors import RealmError
from realm.kernels.runtime import DeviceRuntime
from realm_opencl import devices
from realm_opencl._cl import cl, cla

PRELUDE = "prelude_opencl.h"


class KernelBuildError(RealmError):
    """An OpenCL program failed to compile; the message carries the compiler's log."""


def build_options(device: Any) -> list[str]:
    """Compiler options: IEEE-exact division and sqrt where the device offers them.

    No -cl-fast-relaxed-math or -cl-mad-enable: the dequantizers must match numpy bit for
    bit, and fused or approximate arithmetic would change the last bits.
    """
    if device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
        return ["-cl-fp32-correctly-rounded-divide-sqrt"]
    return []


class Runtime(DeviceRuntime):
    """Context, queue and compiled kernels of one OpenCL device."""

    label = "OpenCL"
    prelude = PRELUDE
    array_type = cla.Array if cla is not None else ()
    array_description = "pyopencl array from this backend"

    def __init__(self, device: Any) -> None:
        self.device = device
        self.is_gpu = devices.is_gpu(device)
        self.context = cl.Context([device])
        self.queue = cl.CommandQueue(self.context, device)
        self.options = build_options(device)
        self._kernels: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def to_device(self, host: np.ndarray) -> cla.Array:
        return cla.to_device(self.queue, host)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> cla.Array:
        return cla.empty(self.queue, shape, dtype)

    def to_host(self, x: cla.Array) -> np.ndarray:
        return x.get(queue=self.queue)

    def memory(self, x: cla.Array) -> tuple[Any, int]:
        return x.base_data, x.offset

    def buffer(self, x: cla.Array) -> tuple[Any, np.int64]:
        return x.base_data, np.int64(x.offset // x.dtype.itemsize)

    def byte_buffer(self, x: cla.Array) -> tuple[Any, np.int64]:
        return x.base_data, np.int64(x.offset)

    def copy_bytes(self, src: cla.Array, dst: cla.Array, dst_offset: int) -> None:
        cl.enqueue_copy(self.queue, dst.base_data, src.base_data, byte_count=src.nbytes,
                        src_offset=src.offset, dst_offset=dst.offset + dst_offset)

    def synchronize(self) -> None:
        self.queue.finish()

    def build(self, key: str, source: str) -> dict[str, Any]:
        """Compile `source` as program `key` and return its kernels by name (uncached)."""
        program = cl.Program(self.context, source)
        try:
            with warnings.catch_warnings():  # PoCL's non-empty logs are not problems
                warnings.simplefilter("ignore", cl.CompilerWarning)
                program.build(options=self.options, devices=[self.device])
        except cl.Error as exc:
            log = _build_log(program, self.device)
            detail = str(exc) if log.strip() in str(exc) else f"{exc}\n{log}"
            raise KernelBuildError(
                f"OpenCL could not compile kernel program {key!r} for "
                f"{self.device.name.strip()!r}; compiler log:\n{detail}"
            ) from exc
        return {k.function_name: k for k in program.all_kernels()}

    def kernels(self, key: str, source: Callable[[], str]) -> dict[str, Any]:
        """The kernels of program `key`, building it from ``source()`` the first time."""
        found = self._kernels.get(key)
        if found is None:
            with self._lock:
                found = self._kernels.get(key)
                if found is None:
                    found = self._kernels[key] = self.build(key, source())
        return found

    def launch(self, kernel: Any, global_size: tuple[int, ...], local_size: tuple[int, ...] | None,
               *args: Any) -> None:
        """Set `args` on a cached kernel and enqueue it (kernels are shared: one at a time)."""
        with self._lock:
            kernel(self.queue, global_size, local_size, *args)


def _build_log(program: Any, device: Any) -> str:
    try:
        return str(program.get_build_info(device, cl.program_build_info.LOG))
    except Exception:  # the program object may not exist after a failed build
        return ""


_RUNTIMES: dict[tuple[int, int], Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def runtime_for(platform_index: int, device_index: int, device: Any) -> Runtime:
    """The shared runtime of device ``opencl:P:D``, created on first use."""
    key = (platform_index, device_index)
    with _RUNTIMES_LOCK:
        if key not in _RUNTIMES:
            _RUNTIMES[key] = Runtime(device)
        return _RUNTIMES[key]
