"""Argument checks and kernel-argument plumbing for pyopencl arrays.

Kernels take each buffer as (base buffer, element offset) (see ``BUF`` in the prelude), so a
view of leading rows (``x[:n]``, ``x[r0:r1]``) or a reshape of one is passed without a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realm.errors import RealmError
from realm_opencl._cl import cla


def check(condition: bool, message: str) -> None:
    """Raise `RealmError` with `message` unless `condition`."""
    if not condition:
        raise RealmError(message)


def check_array(name: str, x: Any, dtype: Any = np.float32,
                shape: tuple[int, ...] | None = None) -> None:
    """`x` is a C-contiguous pyopencl array of `dtype` (and `shape`, when given)."""
    check(isinstance(x, cla.Array),
          f"{name} must be a pyopencl array from this backend, got {type(x).__name__}")
    check(x.dtype == dtype, f"{name} must be {np.dtype(dtype)}, got {x.dtype}")
    if shape is not None:
        check(tuple(x.shape) == tuple(shape), f"{name} must have shape {tuple(shape)}, got {x.shape}")
    check(x.flags.c_contiguous, f"{name} must be C-contiguous (shape {x.shape}, strides {x.strides})")


def buf(x: cla.Array) -> tuple[Any, np.int64]:
    """(base buffer, offset in elements): the two kernel arguments of a ``BUF(T, name)``."""
    return x.base_data, np.int64(x.offset // x.dtype.itemsize)


def byte_buf(x: cla.Array) -> tuple[Any, np.int64]:
    """(base buffer, offset in bytes): an array passed as ``BUF(const uchar, name)``."""
    return x.base_data, np.int64(x.offset)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` >= `n` (global sizes are whole work-groups)."""
    return -(-n // multiple) * multiple


def next_pow2(n: int) -> int:
    """The smallest power of two >= `n` (>= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()
