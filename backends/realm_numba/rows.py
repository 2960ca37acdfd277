"""Whole-row decoding for every GGML type, and the kernels built on it: dequantize and
get_rows. The matmul (gemm.py) decodes each row with `decode_for_matmul`.

A weight is a C-contiguous ``uint8 [rows, row_bytes]`` view of its raw blocks. The
type is passed as its integer GGML id and resolved once per row, not per block, so
one compiled kernel serves every type. Both decoders are written from the format
registry (formats.py): a format's class is the one place that says how it decodes.
"""

from __future__ import annotations

from numba import njit, prange

import realm_numba.int8_formats  # noqa: F401 - defining its classes registers those formats
from realm.gguf.types import GGMLType
from realm_numba.formats import FORMATS, dispatch
from realm_numba.scalars import JIT, JIT_FAST

# The types ``decode_row`` knows: those realm.quants' reference can dequantize.
DECODABLE = frozenset(GGMLType(code) for code in FORMATS)
# The types with a vectorized decoder for the float matmul, and the ``lanes`` each one's
# inner loop takes (matvec.py).
LANES = {GGMLType(code): f.lanes for code, f in FORMATS.items() if f.matmul_decode is not None}


def _exact(fmt, use) -> str:
    """A row of ``fmt`` by its exact decoder: whole, or block after block."""
    decode = use(fmt.decode)
    if fmt.whole_rows:
        return f"{decode}(src, dst{''.join(f', {a}' for a in fmt.row_args)})"
    return (f"for b in range(dst.shape[0] // {fmt.block_values}):\n"
            f"    {decode}(src, b * {fmt.block_bytes}, dst, b * {fmt.block_values})")


def _fast(fmt, use) -> str | None:
    """A row of ``fmt`` by its vectorized decoder, where it has one."""
    return None if fmt.matmul_decode is None else f"{use(fmt.matmul_decode)}(src, dst, lanes)"


# decode_row(code, src, dst): one row of ``dst.shape[0]`` elements of type ``code`` from its
# bytes ``src``, exactly.
decode_row = dispatch("decode_row", "src, dst", _exact, njit(**JIT), __name__)
# decode_for_matmul(code, src, dst, lanes): one row for the float matmul, by the type's
# vectorized decoder (within float32 rounding of the exact one), else exactly. Inlined into
# the matmul's kernel: with a call per row, decoding measured 15-25% slower.
decode_for_matmul = dispatch("decode_for_matmul", "src, dst, lanes", _fast,
                             njit(**{**JIT_FAST, "inline": "always"}), __name__,
                             fallback="decode_row(code, src, dst)", known={"decode_row": decode_row})


@njit(**JIT, parallel=True)
def dequantize_rows(code, w, out):
    """``out[r] = decode(w[r])`` for every row (exact: no fast-math here)."""
    for r in prange(w.shape[0]):
        decode_row(code, w[r], out[r])


@njit(**JIT)
def get_rows(code, w, ids, out):
    """``out[i] = decode(w[ids[i]])``; returns the position of the first id out of range, or -1."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= w.shape[0]:
            return i
    for i in range(ids.shape[0]):
        decode_row(code, w[ids[i]], out[i])
    return -1


@njit(**JIT)
def take_rows(w, ids, out):
    """``out[i] = w[ids[i]]`` for a float32 table; returns the first bad position, or -1."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= w.shape[0]:
            return i
    for i in range(ids.shape[0]):
        out[i] = w[ids[i]]
    return -1
