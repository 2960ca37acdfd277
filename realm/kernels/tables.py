"""The constant tables of the IQ and FP4 decoders, as C source generated from gguf-py.

gguf-py (maintained with llama.cpp) is realm's reference decoder, and it carries the grids
(``grid_hex``, unpacked by ``init_grid``), sign masks and value tables as class attributes.
Generating the C arrays from those same attributes when a program is built means the kernels
cannot drift from the reference and nothing is retyped by hand: a table is a few hundred
lines of hex that no reviewer could check. The text is tiny next to compile time and cached.

Tables are ``uint32`` arrays (8-byte grid entries take two words, little-endian bytes), so no
runtime needs 64-bit constant loads; signed bytes are stored as two's complement and decoded
with ``sext8``.
"""

from __future__ import annotations

import functools

import gguf.quants as gq
import numpy as np


def _grid_bytes(cls: type) -> np.ndarray:
    """The grid of a gguf-py quant class as uint8 rows (one per entry), values checked exact."""
    cls.init_grid()
    grid = np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)
    as_int = grid.astype(np.int16)
    if not (np.array_equal(as_int, grid) and as_int.min() >= -128 and as_int.max() <= 255):
        raise ValueError(f"{cls.__name__}'s grid does not hold byte-sized integers")
    return (as_int & 0xFF).astype(np.uint8)


def _uint_array(name: str, words: np.ndarray) -> str:
    lines = [
        "    " + ", ".join(f"0x{int(w):08x}u" for w in words[i : i + 8]) + ","
        for i in range(0, len(words), 8)
    ]
    return f"CONSTANT uint {name}[{len(words)}] = {{\n" + "\n".join(lines) + "\n};\n"


def _int_array(name: str, values: tuple[int, ...] | list[int]) -> str:
    return f"CONSTANT int {name}[{len(values)}] = {{{', '.join(str(int(v)) for v in values)}}};\n"


def _grid_table(name: str, cls: type) -> str:
    rows = _grid_bytes(cls)
    return _uint_array(name, np.ascontiguousarray(rows).view("<u4").reshape(-1))


_BUILDERS = {
    "ksigns_iq2xs": lambda: _uint_array("ksigns_iq2xs", np.frombuffer(gq.IQ2_XXS.ksigns, np.uint8)),
    "kvalues_mxfp4": lambda: _int_array("kvalues_mxfp4", gq.MXFP4.kvalues),
    "kvalues_iq4nl": lambda: _int_array("kvalues_iq4nl", gq.IQ4_NL.kvalues),
    "iq2xxs_grid": lambda: _grid_table("iq2xxs_grid", gq.IQ2_XXS),
    "iq2xs_grid": lambda: _grid_table("iq2xs_grid", gq.IQ2_XS),
    "iq2s_grid": lambda: _grid_table("iq2s_grid", gq.IQ2_S),
    "iq3xxs_grid": lambda: _grid_table("iq3xxs_grid", gq.IQ3_XXS),
    "iq3s_grid": lambda: _grid_table("iq3s_grid", gq.IQ3_S),
    "iq1s_grid": lambda: _grid_table("iq1s_grid", gq.IQ1_S),
}

TABLE_NAMES = frozenset(_BUILDERS)


@functools.cache
def table_source(name: str) -> str:
    """C source declaring the constant table `name` (see `TABLE_NAMES`)."""
    if name not in _BUILDERS:
        raise KeyError(f"no generated kernel table named {name!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[name]()
