"""realm's reference backend (device ``"numpy"``): plain numpy, the definition of every op.

Registered like any third-party backend, through the ``realm.backends`` entry point
``numpy = "realm_numpy:NumpyBackend"``.
"""

from realm_numpy.backend import DEQUANT_CHUNK_ROWS, NumpyBackend

__all__ = ["DEQUANT_CHUNK_ROWS", "NumpyBackend"]
