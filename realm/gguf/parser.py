"""Byte-level parsing of a GGUF header: magic, version, metadata and the tensor index.

The parser works on any buffer (an mmap of the whole file, or a bytearray that it
asks to grow while it reads) and checks every length and count against the file size
and against realm's limits (``realm.gguf.limits``) before it reads or allocates for it,
so a hostile file fails fast with a ``GGUFFormatError`` naming the offset (and key or
tensor) instead of an IndexError, a MemoryError, a long loop or a huge allocation.

Layout (ggml/docs/gguf.md)::

    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x   (string key | u32 value_type | value)
    tensor_count x (string name | u32 n_dims | n_dims x u64 ne | u32 ggml_type | u64 offset)
    padding to `general.alignment` (default 32), then the data section
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from realm.errors import GGUFFormatError
from realm.gguf.limits import (
    MAX_ARRAY_NESTING,
    MAX_ARRAY_STRING_BYTES,
    MAX_ARRAY_STRINGS,
    MAX_KEY_BYTES,
    MAX_METADATA_KEYS,
    MAX_NESTED_ARRAYS,
    MAX_STRING_VALUE_BYTES,
    MAX_TENSOR_NAME_BYTES,
    MAX_TENSORS,
    limit_message,
)
from realm.gguf.values import (
    ARRAY_DTYPES,
    MIN_VALUE_SIZE,
    SCALAR_STRUCTS,
    GGUFValueType,
    value_type_name,
)

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER_SIZE = 4 + 4 + 8 + 8
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS

# The fewest bytes a metadata entry (empty key, type, one-byte value) and a tensor
# record (empty name, n_dims = 0, type, offset) can take.
MIN_KV_SIZE = 8 + 4 + 1
MIN_TENSOR_INFO_SIZE = 8 + 4 + 4 + 8

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_COUNTS = struct.Struct("<QQ")


@dataclass(frozen=True, slots=True)  # slots: up to MAX_TENSORS of them
class RawTensorInfo:
    """One tensor record as stored: ``dims`` in GGUF order (ne[0], innermost, first)."""

    name: str
    dims: tuple[int, ...]
    type_id: int
    offset: int  # relative to the start of the data section
    record_offset: int  # where this record starts in the file, for messages


@dataclass(frozen=True)
class ParsedHeader:
    version: int
    metadata: dict[str, Any]
    value_types: dict[str, int]  # top-level GGUFValueType id of each key
    tensors: list[RawTensorInfo]
    alignment: int
    data_offset: int  # first byte of the data section (end of the index, padded)


class HeaderParser:
    """Reads a GGUF header out of ``buf``.

    ``grow(end)``, when given, must extend ``buf`` in place to hold at least ``end``
    bytes (``end`` never exceeds ``file_size``); without it ``buf`` is the whole file.
    """

    def __init__(
        self,
        buf: Any,
        file_size: int,
        path: str,
        grow: Callable[[int], None] | None = None,
    ) -> None:
        assert grow is not None or len(buf) == file_size, "a partial buffer needs grow()"
        self.buf = buf
        self.avail = len(buf)
        self.file_size = file_size
        self.path = path
        self._grow: Callable[[int], None] = grow or _no_grow
        self.pos = 0
        self.nested_arrays = 0  # arrays inside arrays so far, against MAX_NESTED_ARRAYS
        self.array_strings = 0  # strings in string arrays so far, against MAX_ARRAY_STRINGS

    # -- errors and bounds -------------------------------------------------------------

    def error(self, offset: int, message: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.path}: offset {offset}: {message}")

    def _need(self, start: int, size: int, what: str) -> int:
        """Make bytes ``[start, start + size)`` readable; returns the readable length."""
        end = start + size
        if end <= self.avail:
            return self.avail
        if end > self.file_size:
            raise self.error(
                start,
                f"{what} needs {size} bytes, but only {self.file_size - start} are left "
                f"in the {self.file_size}-byte file (truncated or corrupt)",
            )
        self._grow(end)
        self.avail = len(self.buf)
        return self.avail

    def _check_limit(self, found: int, limit: int, name: str, what: str, at: int, unit: str = "") -> None:
        """Fail at offset ``at`` when ``found`` is over ``limit`` (``realm.gguf.limits.<name>``)."""
        if found > limit:
            raise self.error(at, limit_message(what, found, unit, name, limit))

    def _check_count(self, count: int, min_size: int, what: str, at: int) -> None:
        left = self.file_size - self.pos
        if count * min_size > left:
            raise self.error(
                at,
                f"{what} is {count}, but the {left} bytes left in the file can hold at most "
                f"{left // min_size} (the file is truncated, corrupt or hostile)",
            )

    # -- primitives ----------------------------------------------------------------------

    def u32(self, what: str) -> int:
        pos = self.pos
        self._need(pos, 4, what)
        self.pos = pos + 4
        return _U32.unpack_from(self.buf, pos)[0]

    def u64(self, what: str) -> int:
        pos = self.pos
        self._need(pos, 8, what)
        self.pos = pos + 8
        return _U64.unpack_from(self.buf, pos)[0]

    def string(self, what: str, max_bytes: int, limit_name: str) -> str:
        """A length-prefixed UTF-8 string of at most ``max_bytes`` (the limit ``limit_name``)."""
        length_at = self.pos
        length = self.u64(f"length of {what}")
        self._check_limit(length, max_bytes, limit_name, f"the length of {what}", length_at, "bytes")
        start = self.pos
        self._need(start, length, what)
        self.pos = start + length
        try:
            return self.buf[start : start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(start + exc.start, f"{what} is not valid UTF-8") from None

    # -- the three sections --------------------------------------------------------------

    def parse(self) -> ParsedHeader:
        version, tensor_count, kv_count = self._header()
        metadata, value_types = self._metadata(kv_count)
        tensors = self._tensor_index(tensor_count)
        alignment = self._alignment(metadata, value_types)
        data_offset = -(-self.pos // alignment) * alignment
        return ParsedHeader(version, metadata, value_types, tensors, alignment, data_offset)

    def _header(self) -> tuple[int, int, int]:
        self._need(0, 8, "the GGUF magic and version")
        magic = bytes(self.buf[0:4])
        if magic != MAGIC:
            raise self.error(0, f"bad magic: expected {MAGIC!r}, found {magic!r}; not a GGUF file")
        version = _U32.unpack_from(self.buf, 4)[0]
        if version not in SUPPORTED_VERSIONS:
            raise self.error(4, _version_message(version))
        self._need(8, 16, "the tensor and metadata counts")
        tensor_count, kv_count = _COUNTS.unpack_from(self.buf, 8)
        self.pos = HEADER_SIZE
        kv_what, tensor_what = "the metadata entry count (kv_count)", "the tensor count (tensor_count)"
        self._check_limit(kv_count, MAX_METADATA_KEYS, "MAX_METADATA_KEYS", kv_what, 16)
        self._check_limit(tensor_count, MAX_TENSORS, "MAX_TENSORS", tensor_what, 8)
        self._check_count(kv_count, MIN_KV_SIZE, kv_what, 16)
        self._check_count(tensor_count, MIN_TENSOR_INFO_SIZE, tensor_what, 8)
        return version, tensor_count, kv_count

    def _metadata(self, kv_count: int) -> tuple[dict[str, Any], dict[str, int]]:
        metadata: dict[str, Any] = {}
        value_types: dict[str, int] = {}
        for index in range(kv_count):
            entry_offset = self.pos
            key = self.string(f"the key of metadata entry {index}", MAX_KEY_BYTES, "MAX_KEY_BYTES")
            if key in metadata:
                raise self.error(entry_offset, f"duplicate metadata key {key!r}")
            type_offset = self.pos
            type_id = self.u32(f"the value type of key {key!r}")
            if type_id not in MIN_VALUE_SIZE:
                raise self.error(
                    type_offset,
                    f"key {key!r} has unknown value type id {type_id}; expected one of "
                    f"0..{max(GGUFValueType)}",
                )
            metadata[key] = self._value(type_id, key, 0)
            value_types[key] = type_id
        return metadata, value_types

    def _value(self, type_id: int, key: str, depth: int) -> Any:
        packer = SCALAR_STRUCTS.get(type_id)
        if packer is not None:
            pos = self.pos
            self._need(pos, packer.size, f"the {value_type_name(type_id)} value of key {key!r}")
            self.pos = pos + packer.size
            value = packer.unpack_from(self.buf, pos)[0]
            if type_id == GGUFValueType.BOOL:
                if value > 1:
                    raise self.error(pos, f"key {key!r}: BOOL value must be 0 or 1, found {value}")
                return bool(value)
            return value
        if type_id == GGUFValueType.STRING:
            return self.string(
                f"the string value of key {key!r}", MAX_STRING_VALUE_BYTES, "MAX_STRING_VALUE_BYTES"
            )
        return self._array(key, depth)

    def _array(self, key: str, depth: int) -> Any:
        at = self.pos
        what = f"key {key!r}: the array nesting depth"
        self._check_limit(depth + 1, MAX_ARRAY_NESTING, "MAX_ARRAY_NESTING", what, at)
        elem_type = self.u32(f"the array element type of key {key!r}")
        if elem_type not in MIN_VALUE_SIZE:
            raise self.error(
                at,
                f"key {key!r}: array of unknown value type id {elem_type}; expected one of "
                f"0..{max(GGUFValueType)}",
            )
        count = self.u64(f"the array length of key {key!r}")
        self._check_count(count, MIN_VALUE_SIZE[elem_type], f"the array length of key {key!r}", at)
        dtype = ARRAY_DTYPES.get(elem_type)
        if dtype is not None:
            return self._numeric_array(dtype, count, key)
        if elem_type == GGUFValueType.STRING:
            self.array_strings += count
            what = (
                f"key {key!r}: the count of strings in string arrays (the {count} of this array "
                f"and {self.array_strings - count} before it)"
            )
            self._check_limit(self.array_strings, MAX_ARRAY_STRINGS, "MAX_ARRAY_STRINGS", what, at)
            return self._string_array(count, key)
        # Checked before any sub-array is built: each costs ~100 bytes for a 12-byte record.
        self.nested_arrays += count
        self._check_limit(
            self.nested_arrays,
            MAX_NESTED_ARRAYS,
            "MAX_NESTED_ARRAYS",
            f"key {key!r}: the count of arrays inside arrays (the {count} of this array "
            f"and {self.nested_arrays - count} before it)",
            at,
        )
        return [self._array(key, depth + 1) for _ in range(count)]

    def _numeric_array(self, dtype: np.dtype, count: int, key: str) -> np.ndarray:
        pos = self.pos
        nbytes = count * dtype.itemsize
        self._need(pos, nbytes, f"the {count}-element array of key {key!r}")
        self.pos = pos + nbytes
        if count == 0:
            return np.empty(0, dtype)
        if dtype == np.bool_:
            raw = np.frombuffer(self.buf, np.uint8, count, pos)
            bad = np.flatnonzero(raw > 1)
            first_bad = (int(bad[0]), int(raw[bad[0]])) if bad.size else None
            del raw  # no view of ``buf`` may outlive this call, or the mmap cannot close
            if first_bad is not None:
                index, found = first_bad
                raise self.error(
                    pos + index,
                    f"key {key!r}: BOOL array element {index} must be 0 or 1, found {found}",
                )
        # A copy, so that the values outlive the mapping and hold no export on ``buf``.
        return np.frombuffer(self.buf, dtype, count, pos).copy()

    def _string_array(self, count: int, key: str) -> list[str]:
        # The hot loop of a tokenizer vocabulary (262144 strings for gemma 3): locals only,
        # two compares per string, everything else on the rare path. A ``list`` of ``str``
        # because that is what callers check for; each costs at most ~8x its bytes on disk.
        buf = self.buf
        unpack = _U64.unpack_from
        max_bytes = MAX_ARRAY_STRING_BYTES
        out: list[str] = []
        append = out.append
        pos = start = self.pos
        index = 0
        if count:
            self._need(pos, 8, f"key {key!r}: the length of string 0")
        avail = self.avail
        try:
            for index in range(count):
                length = unpack(buf, pos)[0]  # readable: checked for this string's length field
                start = pos + 8
                end = start + length
                if length > max_bytes:
                    what = f"key {key!r}: the length of string {index}"
                    self._check_limit(length, max_bytes, "MAX_ARRAY_STRING_BYTES", what, pos, "bytes")
                if end + 8 > avail:  # this string, or the next one's length, is not yet readable
                    avail = self._need(start, length, f"key {key!r}: string {index}")
                    if index + 1 < count:
                        avail = self._need(end, 8, f"key {key!r}: the length of string {index + 1}")
                append(buf[start:end].decode("utf-8"))
                pos = end
        except UnicodeDecodeError as exc:
            raise self.error(start + exc.start, f"key {key!r}: string {index} is not valid UTF-8") from None
        self.pos = pos
        return out

    def _tensor_index(self, tensor_count: int) -> list[RawTensorInfo]:
        self._check_count(tensor_count, MIN_TENSOR_INFO_SIZE, "the tensor count (tensor_count)", 8)
        tensors: list[RawTensorInfo] = []
        seen: set[str] = set()
        for index in range(tensor_count):
            record_offset = self.pos
            name = self.string(f"the name of tensor {index}", MAX_TENSOR_NAME_BYTES, "MAX_TENSOR_NAME_BYTES")
            if name in seen:
                raise self.error(record_offset, f"duplicate tensor name {name!r}")
            seen.add(name)
            dims_offset = self.pos
            n_dims = self.u32(f"the dimension count of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise self.error(
                    dims_offset,
                    f"tensor {name!r} has {n_dims} dimensions; expected at most {MAX_DIMS}",
                )
            self._need(self.pos, 8 * n_dims, f"the shape of tensor {name!r}")
            dims = struct.unpack_from(f"<{n_dims}Q", self.buf, self.pos)
            self.pos += 8 * n_dims
            type_id = self.u32(f"the type of tensor {name!r}")
            offset = self.u64(f"the data offset of tensor {name!r}")
            tensors.append(RawTensorInfo(name, dims, type_id, offset, record_offset))
        return tensors

    def _alignment(self, metadata: dict[str, Any], value_types: dict[str, int]) -> int:
        if ALIGNMENT_KEY not in metadata:
            return DEFAULT_ALIGNMENT
        alignment = metadata[ALIGNMENT_KEY]
        found_type = value_types[ALIGNMENT_KEY]
        if found_type != GGUFValueType.UINT32:
            raise GGUFFormatError(
                f"{self.path}: key {ALIGNMENT_KEY!r} must be a UINT32, found "
                f"{value_type_name(found_type)} ({alignment!r})"
            )
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFFormatError(
                f"{self.path}: key {ALIGNMENT_KEY!r} must be a power of two, found {alignment}"
            )
        return alignment


def _no_grow(end: int) -> None:  # the whole file is in the buffer: _need never asks
    raise AssertionError(f"asked to grow a whole-file buffer to {end}")


def _version_message(version: int) -> str:
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version == 1:
        return (
            "GGUF version 1 is not supported (realm reads versions 2 and 3); "
            "convert the model again with a current llama.cpp or gguf package"
        )
    if swapped in (1, 2, 3):
        return (
            f"this is a big-endian GGUF file (version {swapped} with swapped bytes); "
            "realm reads little-endian files only"
        )
    return (
        f"unknown GGUF version {version}; expected one of {SUPPORTED_VERSIONS} "
        "(a newer file than this realm knows, or a corrupt one)"
    )
