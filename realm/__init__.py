"""realm: run GGUF language models on pluggable compute backends.

>>> import realm
>>> model = realm.load("SmolLM2-135M-Instruct.Q4_1.gguf", device="cpu")   # doctest: +SKIP
>>> print(model.generate("The capital of France is", max_tokens=16, temperature=0).text)  # doctest: +SKIP
"""

from realm.backend import Backend, QuantTensor, RopeMode, backends, get_backend, parse_device
from realm.errors import (
    BackendUnavailableError,
    CallOrderError,
    ChatTemplateError,
    ContextOverflowError,
    GGUFFormatError,
    InvalidDeviceError,
    InvalidParameterError,
    ModelBusyError,
    ModelNotFoundError,
    NumericalError,
    PoolFullError,
    RealmError,
    UnsupportedModelError,
    UnsupportedQuantError,
)
from realm.generate import Completion, SamplingParams
from realm.gguf.types import GGMLType

# The model layer, tokenizer and loader import on first use, so `import realm` (and tools that
# only read a GGUF file or list backends) stay light.
_LAZY = {
    "load": ("realm.loader", "load"),
    "Model": ("realm.model.model", "Model"),
    "GenerationStream": ("realm.model.model", "GenerationStream"),
    "ModelConfig": ("realm.model.config", "ModelConfig"),
    "Tokenizer": ("realm.tokenizer", "Tokenizer"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'realm' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "CallOrderError",
    "ChatTemplateError",
    "Completion",
    "GenerationStream",
    "ContextOverflowError",
    "GGMLType",
    "GGUFFormatError",
    "InvalidDeviceError",
    "InvalidParameterError",
    "Model",
    "ModelConfig",
    "ModelBusyError",
    "PoolFullError",
    "ModelNotFoundError",
    "NumericalError",
    "QuantTensor",
    "RealmError",
    "RopeMode",
    "SamplingParams",
    "Tokenizer",
    "UnsupportedModelError",
    "UnsupportedQuantError",
    "backends",
    "get_backend",
    "load",
    "parse_device",
]
