"""realm's numba CPU backend (device ``"cpu"``).

Registered like any third-party backend, through the ``realm.backends`` entry point
``cpu = "realm_numba:NumbaBackend"``. Importing this package does not import numba;
creating a `NumbaBackend` does.
"""

from realm_numba.backend import CpuQuantTensor, NumbaBackend

__all__ = ["CpuQuantTensor", "NumbaBackend"]
