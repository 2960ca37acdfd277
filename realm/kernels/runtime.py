"""What a device backend needs from its runtime: allocate, copy, compile, launch, synchronize.

Everything else a backend over `realm.kernels` does (argument checks, launch geometry,
choosing matvec or tiled matmul, per-format program selection, the rope frequency cache)
is written once in `realm.kernels.device_backend` for every runtime. A runtime (OpenCL in
``realm_opencl.runtime``; CUDA is the next) implements this class and nothing more.

Buffers reach kernels as two arguments, ``BUF(T, name)`` in the prelude: the allocation and
an offset into it, so a view of leading rows (``x[:n]``, ``x[r0:r1]``) or a reshape of one is
passed without a copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np


class DeviceRuntime(ABC):
    """One device's memory, compiled programs and queue of work."""

    label: str  # how messages name the runtime: "OpenCL", "CUDA"
    prelude: str  # the kernel dialect's spelling for this runtime, a file of `realm.kernels`
    array_type: type | tuple[type, ...]  # what `to_device` and `empty` return
    array_description: str  # how argument errors name those arrays
    is_gpu: bool

    @abstractmethod
    def to_device(self, host: np.ndarray) -> Any:
        """A device copy of a C-contiguous host array."""

    @abstractmethod
    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """Uninitialised device memory."""

    @abstractmethod
    def to_host(self, x: Any) -> np.ndarray:
        """A host copy of `x`, once the work that writes it is done."""

    @abstractmethod
    def memory(self, x: Any) -> tuple[Any, int]:
        """(the allocation `x` lives in, `x`'s byte offset in it): tells views apart and
        finds overlaps."""

    @abstractmethod
    def buffer(self, x: Any) -> tuple[Any, np.int64]:
        """The two kernel arguments of ``BUF(T, name)``: allocation, offset in elements."""

    @abstractmethod
    def byte_buffer(self, x: Any) -> tuple[Any, np.int64]:
        """The two kernel arguments of ``BUF(const uchar, name)``: allocation, offset in bytes."""

    @abstractmethod
    def copy_bytes(self, src: Any, dst: Any, dst_offset: int) -> None:
        """Copy all of `src`'s bytes into `dst` from byte `dst_offset` of `dst` on, in order with
        the queued work."""

    @abstractmethod
    def kernels(self, key: str, source: Callable[[], str]) -> dict[str, Any]:
        """The kernels of program `key` by name, compiled from ``source()`` the first time."""

    @abstractmethod
    def launch(
        self, kernel: Any, global_size: tuple[int, ...], local_size: tuple[int, ...] | None, *args: Any
    ) -> None:
        """Queue `kernel` over `global_size` work-items in groups of `local_size` (OpenCL's
        terms: a CUDA grid is ``global_size / local_size`` blocks)."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait for every queued piece of work."""
