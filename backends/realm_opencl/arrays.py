"""Argument checks and kernel-argument plumbing for pyopencl arrays.

The op checks themselves are `realm.op_checks`; ``CHECKS`` tells them what this backend's
arrays are. Every kernel takes its buffers as flat, so every array must be C-contiguous.

Kernels take each buffer as (base buffer, element offset) (see ``BUF`` in the prelude), so a
view of leading rows (``x[:n]``, ``x[r0:r1]``) or a reshape of one is passed without a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realm.errors import BackendArgumentError
from realm.op_checks import OpChecks
from realm_opencl._cl import cla

# Without pyopencl this module must still import so that `probe` can say so; no op runs then.
CHECKS = OpChecks(cla.Array if cla is not None else (), "pyopencl array from this backend",
                  contiguous_inputs=True, contiguous_outputs=True)


def check(condition: bool, message: str) -> None:
    """Raise `BackendArgumentError` with `message` unless `condition`."""
    if not condition:
        raise BackendArgumentError(message)


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
