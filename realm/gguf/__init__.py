"""Reading GGUF files: header, metadata, tensor index and the memory-mapped data section."""

from realm.gguf.reader import GGUFFile, TensorInfo, read_gguf
from realm.gguf.types import TYPE_TRAITS, GGMLType, TypeTraits, tensor_nbytes, type_traits
from realm.gguf.values import GGUFValueType

__all__ = [
    "GGMLType",
    "GGUFFile",
    "GGUFValueType",
    "TensorInfo",
    "TypeTraits",
    "TYPE_TRAITS",
    "read_gguf",
    "tensor_nbytes",
    "type_traits",
]
