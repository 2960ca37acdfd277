"""The OpenCL backend (device ``"opencl"`` / ``"opencl:P:D"``): realm's ops as OpenCL kernels.

The ops, their checks and launch geometry are `realm.kernels.device_backend`'s, shared with
every backend that runs `realm.kernels` text; this package holds only what is OpenCL: finding
devices (devices.py) and the runtime (runtime.py: context, queue, buffers, programs, enqueue).
"""

from __future__ import annotations

from typing import ClassVar

from realm.backend import Availability, parse_device
from realm.errors import BackendUnavailableError
from realm.kernels.device_backend import DeviceBackend
from realm_opencl import devices
from realm_opencl.runtime import runtime_for


class OpenCLBackend(DeviceBackend):
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
        super().__init__(runtime_for(p, d, cl_device))
