"""realm: run GGUF language models on pluggable compute backends.

>>> import realm
>>> model = realm.load("SmolLM2-135M-Instruct.Q4_1.gguf", device="cpu")   # doctest: +SKIP
>>> print(model.generate("The capital of France is", max_tokens=16, temperature=0).text)  # doctest: +SKIP
"""

from realm.backend import Backend, QuantTensor, RopeMode, backends, get_backend, parse_device
from realm.errors import (
    BackendUnavailableError,
    ChatTemplateError,
    ContextOverflowError,
    GGUFFormatError,
    ModelNotFoundError,
    RealmError,
    UnsupportedModelError,
    UnsupportedQuantError,
)
from realm.generate import Completion, InvalidParameterError, SamplingParams
from realm.gguf.types import GGMLType
from realm.loader import load
from realm.model.config import ModelConfig
from realm.model.model import Model
from realm.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "ChatTemplateError",
    "Completion",
    "ContextOverflowError",
    "GGMLType",
    "GGUFFormatError",
    "InvalidParameterError",
    "Model",
    "ModelConfig",
    "ModelNotFoundError",
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
