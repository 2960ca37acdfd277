"""Open a GGUF file: metadata as Python values, a checked tensor index, the data mmapped.

    >>> with read_gguf("model.gguf") as f:                      # doctest: +SKIP
    ...     f.get("general.architecture")
    ...     info = f.tensors["token_embd.weight"]
    ...     raw = f.tensor_data("token_embd.weight")            # uint8 view, no copy
'llama'

Loading touches only the header pages; the weights stay in the page cache until a
backend reads them. Every malformed input raises ``GGUFFormatError`` naming the file,
the offset, key or tensor, and what was expected; so does a header past one of
``realm.gguf.limits`` (counts, nesting and string lengths no real model reaches), which
keep the memory a header costs within a small multiple of its size.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from realm.errors import GGUFFormatError, ModelNotFoundError, RealmError, UnsupportedQuantError
from realm.gguf.parser import HEADER_SIZE, HeaderParser, ParsedHeader, RawTensorInfo
from realm.gguf.types import TYPE_TRAITS, GGMLType, tensor_nbytes

# The first read when only the header is wanted; it doubles until the header fits. Small,
# so that a file rejected in its first fields costs next to nothing; doubling reaches a
# 4 MB vocabulary in seven cheap steps.
_FIRST_HEADER_READ = 1 << 16


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in the file and how it is encoded.

    ``shape`` is numpy-ordered (GGUF's ``ne`` reversed: ``ne[0]``, the innermost and
    contiguous dimension, is last). ``offset`` is absolute in the file.
    """

    name: str
    shape: tuple[int, ...]
    qtype: GGMLType
    offset: int
    nbytes: int


class GGUFFile:
    """A parsed GGUF file; create it with :func:`read_gguf`.

    ``metadata`` maps each key, in file order, to an ``int``, ``float``, ``bool`` or
    ``str``; a numeric array is a numpy array of the matching dtype, a string array a
    ``list[str]`` and an array of arrays a ``list`` of those. ``tensors`` maps each
    tensor name, in file order, to its :class:`TensorInfo`.

    Use it as a context manager or call :meth:`close` to release the mapping. Arrays
    returned by :meth:`tensor_data` before ``close()`` stay valid: the mapping is then
    released when the last of them is garbage collected.
    """

    def __init__(
        self,
        path: pathlib.Path,
        header: ParsedHeader,
        tensors: dict[str, TensorInfo],
        file_size: int,
        mapping: mmap.mmap | None,
    ) -> None:
        self.path = path
        self.version = header.version
        self.alignment = header.alignment
        self.data_offset = header.data_offset
        self.file_size = file_size
        self.metadata: dict[str, Any] = header.metadata
        self.tensors: dict[str, TensorInfo] = tensors
        self._mapping = mapping
        self._bytes = None if mapping is None else np.frombuffer(mapping, dtype=np.uint8)
        self._has_data = mapping is not None

    def get(self, key: str, default: Any = None) -> Any:
        """The metadata value of ``key``, or ``default`` when the file has no such key."""
        return self.metadata.get(key, default)

    def tensor_data(self, name: str) -> np.ndarray:
        """The raw bytes of tensor ``name``: a read-only uint8 view into the mapped file.

        Raises ``KeyError`` for an unknown name.
        """
        info = self.tensors.get(name)
        if info is None:
            raise KeyError(f"{self.path}: no tensor named {name!r} ({len(self.tensors)} tensors)")
        if self._bytes is None:
            if not self._has_data:
                raise RealmError(
                    f"{self.path} was opened with tensors_data=False; "
                    f"open it with read_gguf(path) to read tensor {name!r}"
                )
            raise RealmError(f"{self.path} is closed; cannot read tensor {name!r}")
        return self._bytes[info.offset : info.offset + info.nbytes]

    @property
    def closed(self) -> bool:
        return self._mapping is None

    def close(self) -> None:
        """Release the mapping (at once, or when the last tensor view is dropped)."""
        self._bytes = None
        mapping, self._mapping = self._mapping, None
        if mapping is not None:
            # A BufferError means views from tensor_data() are still alive; they keep the
            # mapping open and it is unmapped when the last of them goes away.
            with contextlib.suppress(BufferError):
                mapping.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, version={self.version}, "
            f"{len(self.metadata)} keys, {len(self.tensors)} tensors)"
        )


def read_gguf(path: str | os.PathLike[str], *, tensors_data: bool = True) -> GGUFFile:
    """Parse the GGUF file at ``path`` and map its data section read-only.

    With ``tensors_data=False`` only the header (metadata and tensor index) is read
    and nothing is mapped: enough for a tokenizer or ``realm info``; ``tensor_data``
    then raises.

    >>> f = read_gguf("model.gguf")                             # doctest: +SKIP
    >>> f.get("tokenizer.ggml.model"), len(f.tensors)           # doctest: +SKIP
    ('gpt2', 272)
    """
    path = pathlib.Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; the mapping outlives it
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path}: no such GGUF file") from None
    with file:
        file_size = os.fstat(file.fileno()).st_size
        if not tensors_data or file_size < HEADER_SIZE:  # an empty file cannot be mapped
            header = _parse_by_reading(file, file_size, path)
            tensors = _tensor_index(header, file_size, path)
            return GGUFFile(path, header, tensors, file_size, None)
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        header = HeaderParser(mapping, file_size, str(path)).parse()
        tensors = _tensor_index(header, file_size, path)
    except BaseException:
        # A BufferError here would hide the real error; the mapping then goes with the
        # last reference to it.
        with contextlib.suppress(BufferError):
            mapping.close()
        raise
    return GGUFFile(path, header, tensors, file_size, mapping)


def _parse_by_reading(file: Any, file_size: int, path: pathlib.Path) -> ParsedHeader:
    buf = bytearray()

    def grow(end: int) -> None:
        nonlocal buf  # ``*=`` rebinds the name; a bytearray repeats in place, same object
        have = len(buf)
        target = min(file_size, max(end, 2 * have, _FIRST_HEADER_READ))
        # Grown in place (the parser holds ``buf``) and read into directly: ``extend`` with
        # a chunk from ``read`` would briefly hold every new byte twice. Repeating the
        # buffer resizes it without a temporary; the copied bytes are overwritten below.
        if not have:
            buf.append(0)
        buf *= -(-target // len(buf))
        del buf[target:]
        got = have
        with memoryview(buf) as view:
            while got < target:
                n = file.readinto(view[got:target])
                if not n:
                    break
                got += n
        if got < end:
            raise GGUFFormatError(
                f"{path}: offset {got}: the file ended while reading the header "
                f"(it was {file_size} bytes when opened; is it being written?)"
            )
        del buf[got:]

    return HeaderParser(buf, file_size, str(path), grow).parse()


def _tensor_index(header: ParsedHeader, file_size: int, path: pathlib.Path) -> dict[str, TensorInfo]:
    """Check every tensor record and turn it into a :class:`TensorInfo`."""
    tensors = {raw.name: _tensor_info(raw, header, file_size, path) for raw in header.tensors}
    _check_no_overlap(tensors, path)
    return tensors


def _tensor_info(raw: RawTensorInfo, header: ParsedHeader, file_size: int, path: pathlib.Path) -> TensorInfo:
    where = f"{path}: tensor {raw.name!r} (record at offset {raw.record_offset})"
    try:
        qtype = GGMLType(raw.type_id)
    except ValueError:
        known = ", ".join(f"{t.value}={t.name}" for t in GGMLType)
        raise UnsupportedQuantError(
            f"{where} has GGML type id {raw.type_id}, which realm does not know (known: {known})"
        ) from None
    block_size = TYPE_TRAITS[qtype].block_size
    inner = raw.dims[0] if raw.dims else 1
    if inner % block_size:
        raise GGUFFormatError(
            f"{where}: innermost dimension {inner} is not a multiple of the "
            f"{qtype.name} block size {block_size}"
        )
    if raw.offset % header.alignment:
        raise GGUFFormatError(
            f"{where}: data offset {raw.offset} is not a multiple of the alignment {header.alignment}"
        )
    shape = tuple(reversed(raw.dims))
    nbytes = tensor_nbytes(qtype, shape)
    start = header.data_offset + raw.offset
    if start + nbytes > file_size:
        raise GGUFFormatError(
            f"{where}: its {nbytes} bytes at offset {start} end at {start + nbytes}, "
            f"past the end of the {file_size}-byte file (truncated data or bad offset)"
        )
    return TensorInfo(raw.name, shape, qtype, start, nbytes)


def _check_no_overlap(tensors: dict[str, TensorInfo], path: pathlib.Path) -> None:
    ordered = sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes))
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.offset < prev.offset + prev.nbytes:
            raise GGUFFormatError(
                f"{path}: tensor {cur.name!r} at offset {cur.offset} overlaps tensor "
                f"{prev.name!r} (bytes {prev.offset}..{prev.offset + prev.nbytes}); "
                "expected each tensor to start after the previous one ends"
            )
