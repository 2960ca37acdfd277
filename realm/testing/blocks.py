"""Random but valid raw GGML blocks, for conformance tests and benchmarks.

Random bytes are a valid encoding of most block formats except for their scale
fields: a random float16 scale can be NaN, infinite or huge. So each block starts as
random bytes and its scale fields are then overwritten with finite, moderate values
(and derived fields, such as Q8_K's per-group sums, are made consistent).
"""

from __future__ import annotations

import numpy as np

from realm.errors import UnsupportedQuantError
from realm.gguf.types import TYPE_TRAITS, GGMLType, type_traits

# Byte offsets of the float16 scale fields ("d", "dmin", "m") inside one block of each
# type, from ggml-common.h. Types with scales of another kind are handled in `random_blocks`.
_F16_SCALE_OFFSETS: dict[GGMLType, tuple[int, ...]] = {
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, 2),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,),
    GGMLType.Q2_K: (80, 82),  # scales[16], qs[64], d, dmin
    GGMLType.Q3_K: (108,),  # hmask[32], qs[64], scales[12], d
    GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2),
    GGMLType.Q6_K: (208,),  # ql[128], qh[64], scales[16], d
    GGMLType.IQ2_XXS: (0,),
    GGMLType.IQ2_XS: (0,),
    GGMLType.IQ3_XXS: (0,),
    GGMLType.IQ1_S: (0,),
    GGMLType.IQ4_NL: (0,),
    GGMLType.IQ3_S: (0,),
    GGMLType.IQ2_S: (0,),
    GGMLType.IQ4_XS: (0,),
    GGMLType.TQ1_0: (52,),  # qs[48], qh[4], d
    GGMLType.TQ2_0: (64,),  # qs[64], d
    GGMLType.Q1_0: (0,),
}

for _t, _offsets in _F16_SCALE_OFFSETS.items():
    assert max(_offsets) + 2 <= TYPE_TRAITS[_t].type_size, _t

_PLAIN_FLOATS = {GGMLType.F32: "<f4", GGMLType.F16: "<f2", GGMLType.F64: "<f8"}
_PLAIN_INTS = {GGMLType.I8: "i1", GGMLType.I16: "<i2", GGMLType.I32: "<i4", GGMLType.I64: "<i8"}


def _moderate_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scales of either sign with magnitudes spread log-uniformly over 2**-10 .. 2**-4."""
    magnitude = np.exp2(rng.uniform(-10.0, -4.0, n))
    return (magnitude * rng.choice([-1.0, 1.0], n)).astype(np.float32)


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype("<f2").view(np.uint8).reshape(-1, 2)


def random_blocks(qtype: GGMLType, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """`n_blocks` random valid blocks of `qtype` as a uint8 array ``[n_blocks, type_size]``.

    Plain types (F32, F16, BF16, F64, I8..I64) get one standard-normal (or small integer)
    value per "block". Every scale field is finite and moderate (|d| in 2**-10..2**-4), so
    decoded values stay well inside float32 range.

    >>> random_blocks(GGMLType.Q4_0, 3, np.random.default_rng(0)).shape
    (3, 18)
    """
    qtype = GGMLType(qtype)
    size = type_traits(qtype).type_size
    if qtype in _PLAIN_FLOATS:
        values = rng.standard_normal(n_blocks).astype(_PLAIN_FLOATS[qtype])
        return values.view(np.uint8).reshape(n_blocks, size)
    if qtype in _PLAIN_INTS:
        values = rng.integers(-100, 100, n_blocks).astype(_PLAIN_INTS[qtype])
        return values.view(np.uint8).reshape(n_blocks, size)
    if qtype == GGMLType.BF16:
        # bfloat16 is the upper half of a float32: truncating keeps it finite.
        values = rng.standard_normal(n_blocks).astype("<f4").view("<u4") >> 16
        return values.astype("<u2").view(np.uint8).reshape(n_blocks, size)

    blocks = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    if qtype in _F16_SCALE_OFFSETS:
        for offset in _F16_SCALE_OFFSETS[qtype]:
            blocks[:, offset : offset + 2] = _f16_bytes(_moderate_scales(rng, n_blocks))
    elif qtype == GGMLType.IQ1_M:
        # qs[32], qh[16], scales[8]: the block's float16 scale is split into four nibbles,
        # stored in the top 4 bits of each of the four uint16 words of `scales`.
        words = blocks[:, 48:56].copy().view("<u2")  # [n, 4]
        d_bits = _moderate_scales(rng, n_blocks).astype("<f2").view("<u2").astype(np.uint16)
        for k in range(4):
            nibble = (d_bits >> np.uint16(4 * k)) & np.uint16(0xF)
            words[:, k] = (words[:, k] & np.uint16(0x0FFF)) | (nibble << np.uint16(12))
        blocks[:, 48:56] = words.view(np.uint8)
    elif qtype == GGMLType.MXFP4:
        # e[1] (an E8M0 power of two, 127 = 2**0), qs[16]
        blocks[:, 0] = rng.integers(110, 126, n_blocks, dtype=np.uint8)
    elif qtype == GGMLType.NVFP4:
        # d[4] (unsigned E4M3 sub-block scales), qs[32]; exponents 1..6 keep them moderate
        blocks[:, 0:4] = rng.integers(0x08, 0x38, (n_blocks, 4), dtype=np.uint8)
    elif qtype == GGMLType.Q8_K:
        # d (float32), qs[256] (int8), bsums[16] (int16): sums of each 16 qs, kept consistent
        blocks[:, 0:4] = _moderate_scales(rng, n_blocks).astype("<f4").view(np.uint8).reshape(-1, 4)
        qs = blocks[:, 4:260].view(np.int8).astype(np.int16).reshape(n_blocks, 16, 16)
        blocks[:, 260:292] = qs.sum(axis=-1).astype("<i2").view(np.uint8)
    elif qtype == GGMLType.Q8_1:
        # d and s (float32; s = d * sum(qs)), qs[32] (int8), in realm's 40-byte layout
        d = _moderate_scales(rng, n_blocks)
        s = d * blocks[:, 8:40].view(np.int8).astype(np.float32).sum(axis=-1)
        blocks[:, 0:4] = d.astype("<f4").view(np.uint8).reshape(-1, 4)
        blocks[:, 4:8] = s.astype("<f4").view(np.uint8).reshape(-1, 4)
    else:  # pragma: no cover - a new type in the table must be described here
        raise NotImplementedError(f"random_blocks does not know the layout of {qtype.name}")
    return blocks


def random_quant_tensor(
    qtype: GGMLType, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Random valid raw data for a tensor of `shape` (numpy order) in `qtype`.

    Returns uint8 ``[*shape[:-1], row_bytes]``, ready for ``backend.upload_quant(raw,
    qtype, shape)`` or `realm.quants.dequantize`. The last dimension must be a whole
    number of blocks.
    """
    qtype = GGMLType(qtype)
    traits = type_traits(qtype)
    shape = tuple(int(d) for d in shape)
    if not shape or shape[-1] % traits.block_size:
        raise UnsupportedQuantError(
            f"a {qtype.name} tensor needs rows that are a multiple of {traits.block_size} "
            f"elements; got shape {shape}"
        )
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    blocks_per_row = shape[-1] // traits.block_size
    raw = random_blocks(qtype, n_rows * blocks_per_row, rng)
    return raw.reshape(*shape[:-1], blocks_per_row * traits.type_size)


def rescale_blocks(raw: np.ndarray, qtype: GGMLType, factor: float) -> np.ndarray:
    """A copy of `raw` whose decoded values are `factor` times the original's.

    Every supported layout decodes linearly in its float scale fields (``d`` and, where
    there is one, ``dmin``/``m``), so scaling those fields scales the tensor (up to the
    float16 rounding of the new scales).
    """
    qtype = GGMLType(qtype)
    size = type_traits(qtype).type_size
    blocks = np.array(raw, dtype=np.uint8, copy=True).reshape(-1, size)
    if qtype in _F16_SCALE_OFFSETS:
        for offset in _F16_SCALE_OFFSETS[qtype]:
            field = blocks[:, offset : offset + 2].copy().view("<f2").astype(np.float32)
            scaled = (field * np.float32(factor)).astype("<f2")
            if not np.isfinite(scaled).all():
                raise UnsupportedQuantError(
                    f"scaling {qtype.name} blocks by {factor} overflows their float16 scales"
                )
            blocks[:, offset : offset + 2] = scaled.view(np.uint8).reshape(-1, 2)
    elif qtype in (GGMLType.Q8_K, GGMLType.Q8_1):
        n_fields = 1 if qtype == GGMLType.Q8_K else 2
        fields = blocks[:, : 4 * n_fields].copy().view("<f4") * np.float32(factor)
        blocks[:, : 4 * n_fields] = fields.astype("<f4").view(np.uint8)
    else:
        raise UnsupportedQuantError(
            f"cannot rescale {qtype.name} blocks: their scales are not plain float fields"
        )
    return blocks.reshape(raw.shape)
