"""The GGML tensor type table: ids, block sizes and bytes per block.

Values follow ggml's `enum ggml_type` (ggml/include/ggml.h). Ids that ggml
retired (4, 5: Q4_2/Q4_3; 31-33, 36-38: removed Q4_0 repacks and IQ4_NL variants)
are absent on purpose: a file that uses them is rejected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GGMLType(enum.IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


@dataclass(frozen=True)
class TypeTraits:
    """How a GGML type lays out its elements: `block_size` elements in `type_size` bytes."""

    block_size: int
    type_size: int
    is_quantized: bool


QK_K = 256

TYPE_TRAITS: dict[GGMLType, TypeTraits] = {
    GGMLType.F32: TypeTraits(1, 4, False),
    GGMLType.F16: TypeTraits(1, 2, False),
    GGMLType.BF16: TypeTraits(1, 2, False),
    GGMLType.F64: TypeTraits(1, 8, False),
    GGMLType.I8: TypeTraits(1, 1, False),
    GGMLType.I16: TypeTraits(1, 2, False),
    GGMLType.I32: TypeTraits(1, 4, False),
    GGMLType.I64: TypeTraits(1, 8, False),
    GGMLType.Q4_0: TypeTraits(32, 2 + 16, True),
    GGMLType.Q4_1: TypeTraits(32, 2 + 2 + 16, True),
    GGMLType.Q5_0: TypeTraits(32, 2 + 4 + 16, True),
    GGMLType.Q5_1: TypeTraits(32, 2 + 2 + 4 + 16, True),
    GGMLType.Q8_0: TypeTraits(32, 2 + 32, True),
    GGMLType.Q8_1: TypeTraits(32, 4 + 4 + 32, True),
    GGMLType.Q2_K: TypeTraits(QK_K, 2 + 2 + QK_K // 16 + QK_K // 4, True),
    GGMLType.Q3_K: TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 8 + 12, True),
    GGMLType.Q4_K: TypeTraits(QK_K, 2 + 2 + QK_K // 2 + 12, True),
    GGMLType.Q5_K: TypeTraits(QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12, True),
    GGMLType.Q6_K: TypeTraits(QK_K, 2 + QK_K // 16 + 3 * QK_K // 4, True),
    GGMLType.Q8_K: TypeTraits(QK_K, 4 + QK_K + QK_K // 8, True),
    GGMLType.IQ2_XXS: TypeTraits(QK_K, 2 + QK_K // 4, True),
    GGMLType.IQ2_XS: TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 32, True),
    GGMLType.IQ3_XXS: TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 8, True),
    GGMLType.IQ1_S: TypeTraits(QK_K, 2 + QK_K // 8 + QK_K // 16, True),
    GGMLType.IQ4_NL: TypeTraits(32, 2 + 16, True),
    GGMLType.IQ3_S: TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4, True),
    GGMLType.IQ2_S: TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 16, True),
    GGMLType.IQ4_XS: TypeTraits(QK_K, 2 + 2 + QK_K // 2 + QK_K // 64, True),
    GGMLType.IQ1_M: TypeTraits(QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32, True),
    GGMLType.TQ1_0: TypeTraits(QK_K, 2 + 4 * 13, True),
    GGMLType.TQ2_0: TypeTraits(QK_K, 2 + 64, True),
    GGMLType.MXFP4: TypeTraits(32, 1 + 16, True),
    GGMLType.NVFP4: TypeTraits(64, 4 + 32, True),
    GGMLType.Q1_0: TypeTraits(128, 2 + 16, True),
}

assert set(TYPE_TRAITS) == set(GGMLType), "every GGML type needs its traits"


def type_traits(qtype: GGMLType) -> TypeTraits:
    return TYPE_TRAITS[qtype]


def tensor_nbytes(qtype: GGMLType, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of `shape` (numpy order, innermost last) occupies in `qtype`.

    The innermost dimension must be a whole number of blocks; callers check that first.
    """
    traits = TYPE_TRAITS[qtype]
    n = 1
    for d in shape:
        n *= d
    return n // traits.block_size * traits.type_size
