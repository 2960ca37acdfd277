"""Reading GGUF files: header, metadata, tensor index and the memory-mapped data section."""

from realm.gguf.types import TYPE_TRAITS, GGMLType, TypeTraits, tensor_nbytes, type_traits

__all__ = ["GGMLType", "TypeTraits", "TYPE_TRAITS", "tensor_nbytes", "type_traits"]
