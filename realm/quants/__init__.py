"""Reference dequantization: raw GGML blocks to float32.

The block decoders come from the ``gguf`` package (gguf-py, maintained with
llama.cpp): it is the oracle every backend is checked against, so realm does
not keep a second copy of those decoders. Plain float and integer types are
converted here. A type neither can decode raises `UnsupportedQuantError`.

>>> import numpy as np
>>> raw = np.array([0, 60, 0, 188], dtype=np.uint8)       # two float16: 1.0, -1.0
>>> dequantize(raw, GGMLType.F16, (2,)).tolist()
[1.0, -1.0]
"""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np

from realm.errors import GGUFFormatError, UnsupportedQuantError
from realm.gguf.types import TYPE_TRAITS, GGMLType, tensor_nbytes

__all__ = ["SUPPORTED_TYPES", "dequantize", "row_nbytes"]

# Types converted here with numpy's own casts (element = one value, no blocks).
_PLAIN_DTYPES: dict[GGMLType, np.dtype] = {
    GGMLType.F32: np.dtype("<f4"),
    GGMLType.F16: np.dtype("<f2"),
    GGMLType.F64: np.dtype("<f8"),
    GGMLType.I8: np.dtype("i1"),
    GGMLType.I16: np.dtype("<i2"),
    GGMLType.I32: np.dtype("<i4"),
    GGMLType.I64: np.dtype("<i8"),
}


def _gguf_can_decode(qtype: GGMLType) -> bool:
    """Whether this gguf release has a block decoder for `qtype` (it raises otherwise)."""
    gtype = gguf.GGMLQuantizationType[qtype.name]
    assert gguf.GGML_QUANT_SIZES[gtype] == (
        TYPE_TRAITS[qtype].block_size,
        TYPE_TRAITS[qtype].type_size,
    ), f"gguf and realm disagree on the block layout of {qtype.name}"
    try:
        gguf.quants.dequantize(np.zeros((1, TYPE_TRAITS[qtype].type_size), np.uint8), gtype)
    except NotImplementedError:
        return False
    return True


_GGUF_DECODED = frozenset(
    t
    for t in GGMLType
    if t not in _PLAIN_DTYPES
    and t.name in gguf.GGMLQuantizationType.__members__
    and _gguf_can_decode(t)
)

#: Every GGML type `dequantize` can decode.
SUPPORTED_TYPES: frozenset[GGMLType] = frozenset(_PLAIN_DTYPES) | _GGUF_DECODED


def row_nbytes(qtype: GGMLType, n_cols: int) -> int:
    """Bytes one row of `n_cols` elements takes in `qtype` (`n_cols` a whole number of blocks)."""
    traits = TYPE_TRAITS[qtype]
    return n_cols // traits.block_size * traits.type_size


def dequantize(
    raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...], name: str = ""
) -> np.ndarray:
    """Decode the raw bytes of a tensor of `shape` (numpy order) stored as `qtype` to float32.

    `raw` is a uint8 array holding exactly the tensor's bytes (any shape; it is not copied
    unless a conversion needs to). `name` only serves error messages.
    """
    qtype = GGMLType(qtype)
    shape = tuple(int(d) for d in shape)
    what = f"tensor {name!r}" if name else "tensor"
    if qtype not in SUPPORTED_TYPES:
        raise UnsupportedQuantError(
            f"{what} has type {qtype.name}, which realm cannot dequantize (the installed gguf "
            f"package has no decoder for it); supported: "
            f"{', '.join(sorted(t.name for t in SUPPORTED_TYPES))}"
        )
    block_size = TYPE_TRAITS[qtype].block_size
    n_cols = shape[-1] if shape else 1
    if n_cols % block_size:
        raise GGUFFormatError(
            f"{what} of type {qtype.name} has rows of {n_cols} elements, "
            f"not a multiple of the block size {block_size}"
        )
    expected = tensor_nbytes(qtype, shape)
    if raw.dtype != np.uint8 or raw.size != expected:
        raise GGUFFormatError(
            f"{what} ({qtype.name}, shape {shape}) needs {expected} bytes of uint8, "
            f"got {raw.size} of {raw.dtype}"
        )
    flat = np.ascontiguousarray(raw).reshape(-1)
    if qtype in _PLAIN_DTYPES:
        return flat.view(_PLAIN_DTYPES[qtype]).astype(np.float32).reshape(shape)
    return _decode_blocks(flat, qtype).reshape(shape)


# gguf-py decodes 16 rows per numpy call; blocks decode independently of the rows they sit
# in, so regrouping the bytes into "rows" of ~16K elements gives identical values with
# far fewer, larger numpy calls (about 2x faster than the tensor's own rows).
_ELEMENTS_PER_GROUP = 16384


def _decode_blocks(flat: np.ndarray, qtype: GGMLType) -> np.ndarray:
    traits = TYPE_TRAITS[qtype]
    gtype = gguf.GGMLQuantizationType[qtype.name]
    n_blocks = flat.size // traits.type_size
    if n_blocks == 0:
        return np.empty(0, np.float32)
    per_group = min(n_blocks, max(1, _ELEMENTS_PER_GROUP // traits.block_size))
    split = (n_blocks - n_blocks % per_group) * traits.type_size
    parts = [flat[:split].reshape(-1, per_group * traits.type_size)]
    if split < flat.size:  # the blocks left over after the last whole group
        parts.append(flat[split:].reshape(1, -1))
    decoded = [np.asarray(gguf.quants.dequantize(p, gtype), np.float32).reshape(-1) for p in parts]
    return decoded[0] if len(decoded) == 1 else np.concatenate(decoded)
