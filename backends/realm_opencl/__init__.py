"""realm's OpenCL backend (device ``"opencl"`` or ``"opencl:P:D"``), on any OpenCL 1.2 device.

Registered like any third-party backend, through the ``realm.backends`` entry point
``opencl = "realm_opencl:OpenCLBackend"``. Kernel sources come from `realm.kernels`.
"""

from realm_opencl.backend import OpenCLBackend

__all__ = ["OpenCLBackend"]
