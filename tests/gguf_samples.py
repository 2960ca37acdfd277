"""Small GGUF files for the reader tests, written with gguf.GGUFWriter, and byte locators.

``write_sample`` returns what it wrote (metadata values with their GGUF types, tensor
bytes and element shapes) so tests compare the reader against the writer's input, not
against the reader itself. The locators find a key's or a tensor record's fields in the
file bytes so that error tests can patch exactly one field.
"""

from __future__ import annotations

import pathlib
import struct
from dataclasses import dataclass, field
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

# key -> (value, GGUF type, array element type or None); file order.
SCALARS: dict[str, tuple[Any, V]] = {
    "test.u8": (200, V.UINT8),
    "test.i8": (-100, V.INT8),
    "test.u16": (60000, V.UINT16),
    "test.i16": (-30000, V.INT16),
    "test.u32": (4_000_000_000, V.UINT32),
    "test.i32": (-2_000_000_000, V.INT32),
    "test.f32": (0.1, V.FLOAT32),
    "test.u64": (2**63 + 5, V.UINT64),
    "test.i64": (-(2**62) - 3, V.INT64),
    "test.f64": (3.141592653589793, V.FLOAT64),
    "test.bool_true": (True, V.BOOL),
    "test.bool_false": (False, V.BOOL),
    "test.string": ("héllo ✓ 日本語 \n\t end", V.STRING),
    "test.empty_string": ("", V.STRING),
}

NUMERIC_ARRAYS: dict[str, tuple[list[Any], V, str]] = {
    "test.arr.u8": ([0, 1, 255], V.UINT8, "uint8"),
    "test.arr.i8": ([-128, 0, 127], V.INT8, "int8"),
    "test.arr.u16": ([0, 65535, 7], V.UINT16, "uint16"),
    "test.arr.i16": ([-32768, 32767], V.INT16, "int16"),
    "test.arr.u32": ([0, 4_294_967_295, 12], V.UINT32, "uint32"),
    "test.arr.i32": ([-(2**31), 2**31 - 1, 0, 5], V.INT32, "int32"),
    "test.arr.f32": ([0.5, -1.25, 1e-30, 3.4e38], V.FLOAT32, "float32"),
    "test.arr.u64": ([0, 2**64 - 1], V.UINT64, "uint64"),
    "test.arr.i64": ([-(2**63), 2**63 - 1], V.INT64, "int64"),
    "test.arr.f64": ([1e-300, -2.5, 1e300], V.FLOAT64, "float64"),
    "test.arr.bool": ([True, False, True, True], V.BOOL, "bool"),
}

STRING_ARRAY = ["<s>", "", "▁hello", "日本", "a b\nc", "Ġworld", "\u0000nul"]
NESTED_INTS = [[1, 2, 3], [4], [5, 6]]
NESTED_STRINGS = [["a", "bc"], ["日本"]]


@dataclass
class Sample:
    """What ``write_sample`` put into a file."""

    path: pathlib.Path
    alignment: int
    tensors: dict[str, tuple[np.ndarray, Q, tuple[int, ...]]] = field(
        default_factory=dict
    )  # name -> (raw bytes as uint8, qtype, element shape in numpy order)


def sample_tensors(seed: int = 0) -> dict[str, tuple[np.ndarray, Q]]:
    """Tensors of many types, as (array handed to GGUFWriter.add_tensor, raw_dtype or None)."""
    rng = np.random.default_rng(seed)
    f32 = rng.standard_normal
    return {
        "f32.2d": (f32((3, 5)).astype(np.float32), None),
        "f32.4d": (f32((2, 1, 3, 4)).astype(np.float32), None),
        "f16.2d": (f32((4, 8)).astype(np.float16), None),
        "f64.1d": (f32(3), None),
        "i8.1d": (rng.integers(-128, 127, 7, dtype=np.int8), None),
        "i16.1d": (rng.integers(-3000, 3000, 5, dtype=np.int16), None),
        "i32.2d": (rng.integers(-(2**31), 2**31 - 1, (2, 3), dtype=np.int32), None),
        "i64.1d": (rng.integers(-(2**62), 2**62, 2, dtype=np.int64), None),
        "bf16.2d": (gguf.quants.quantize(f32((2, 6)).astype(np.float32), Q.BF16), Q.BF16),
        "q4_0.2d": (gguf.quants.quantize(f32((3, 64)).astype(np.float32), Q.Q4_0), Q.Q4_0),
        "q8_0.3d": (gguf.quants.quantize(f32((2, 3, 64)).astype(np.float32), Q.Q8_0), Q.Q8_0),
        # K-quants: random block bytes are valid storage (the reader never decodes them).
        "q4_k.2d": (rng.integers(0, 256, (2, 144), dtype=np.uint8), Q.Q4_K),
        "q6_k.2d": (rng.integers(0, 256, (1, 2 * 210), dtype=np.uint8), Q.Q6_K),
    }


def write_sample(
    path: pathlib.Path,
    *,
    alignment: int | None = None,
    extra_strings: int = 0,
    with_tensors: bool = True,
) -> Sample:
    """Write every metadata value type and ``sample_tensors()`` to ``path``."""
    writer = gguf.GGUFWriter(path, arch="testarch")
    for key, (value, vtype) in SCALARS.items():
        writer.add_key_value(key, value, vtype)
    for key, (values, vtype, _) in NUMERIC_ARRAYS.items():
        writer.add_key_value(key, values, V.ARRAY, sub_type=vtype)
    writer.add_key_value("test.arr.string", STRING_ARRAY, V.ARRAY, sub_type=V.STRING)
    writer.add_key_value("test.arr.nested_int", NESTED_INTS, V.ARRAY)
    writer.add_key_value("test.arr.nested_string", NESTED_STRINGS, V.ARRAY)
    if extra_strings:
        writer.add_key_value("test.arr.big_string", big_strings(extra_strings), V.ARRAY)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    sample = Sample(path, alignment or 32)
    if with_tensors:
        for name, (array, raw_dtype) in sample_tensors().items():
            writer.add_tensor(name, array, raw_dtype=raw_dtype)
            qtype = raw_dtype if raw_dtype is not None else _plain_qtype(array.dtype)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            raw = np.ascontiguousarray(array).view(np.uint8)
            shape = array.shape
            if raw_dtype is not None and array.dtype == np.uint8:
                shape = (*shape[:-1], shape[-1] // type_size * block)
            sample.tensors[name] = (raw.reshape(-1), qtype, tuple(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sample


def big_strings(n: int) -> list[str]:
    return [f"tok{i}_{'x' * (i % 23)}_é" for i in range(n)]


def _plain_qtype(dtype: np.dtype) -> Q:
    return {
        np.dtype(np.float32): Q.F32,
        np.dtype(np.float16): Q.F16,
        np.dtype(np.float64): Q.F64,
        np.dtype(np.int8): Q.I8,
        np.dtype(np.int16): Q.I16,
        np.dtype(np.int32): Q.I32,
        np.dtype(np.int64): Q.I64,
    }[np.dtype(dtype)]


# -- locating fields in the bytes of a file ------------------------------------------------


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def key_offsets(data: bytes, key: str) -> tuple[int, int, int]:
    """(start of the entry, offset of its value type, offset of its value)."""
    start = data.index(gguf_string(key))
    type_at = start + 8 + len(key.encode())
    return start, type_at, type_at + 4


def tensor_record(data: bytes, name: str) -> dict[str, int]:
    """Offsets of the fields of tensor ``name``'s index record."""
    start = data.index(gguf_string(name))
    n_dims_at = start + 8 + len(name.encode())
    (n_dims,) = struct.unpack_from("<I", data, n_dims_at)
    type_at = n_dims_at + 4 + 8 * n_dims
    return {
        "start": start,
        "n_dims": n_dims_at,
        "dims": n_dims_at + 4,
        "type": type_at,
        "offset": type_at + 4,
    }


def patched(data: bytes, at: int, fmt: str, value: Any) -> bytes:
    """``data`` with ``struct.pack(fmt, value)`` written over the bytes at ``at``."""
    new = struct.pack(fmt, value)
    return data[:at] + new + data[at + len(new) :]
