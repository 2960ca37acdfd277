"""GGUF metadata value types and how each one is laid out on disk.

Ids follow ``enum gguf_type`` (ggml/include/gguf.h). Every multi-byte value is
little-endian; realm reads little-endian files only.
"""

from __future__ import annotations

import enum
import struct

import numpy as np


class GGUFValueType(enum.IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size types: the struct that unpacks one value and the numpy dtype of an array of them.
SCALAR_STRUCTS: dict[int, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<B"),  # one byte, 0 or 1; checked by the parser
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}

ARRAY_DTYPES: dict[int, np.dtype] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype(np.bool_),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}

# The fewest bytes one value of each type can take: a string is at least its 8-byte
# length, an array at least its 4-byte element type and 8-byte count. Used to reject a
# count that could not fit in the rest of the file before anything is allocated for it.
MIN_VALUE_SIZE: dict[int, int] = {t: s.size for t, s in SCALAR_STRUCTS.items()}
MIN_VALUE_SIZE[GGUFValueType.STRING] = 8
MIN_VALUE_SIZE[GGUFValueType.ARRAY] = 4 + 8

assert set(MIN_VALUE_SIZE) == set(GGUFValueType), "every value type needs a minimum size"
assert all(ARRAY_DTYPES[t].itemsize == s.size for t, s in SCALAR_STRUCTS.items())


def value_type_name(type_id: int) -> str:
    """``"UINT32"`` for a known id, ``"unknown type id 42"`` otherwise (for messages)."""
    try:
        return GGUFValueType(type_id).name
    except ValueError:
        return f"unknown type id {type_id}"
