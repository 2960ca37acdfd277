"""Helpers for testing and benchmarking realm: random valid quantized data, tiny GGUF models.

>>> import numpy as np
>>> from realm.gguf.types import GGMLType
>>> random_quant_tensor(GGMLType.Q8_0, (4, 64), np.random.default_rng(0)).shape
(4, 68)
"""

from realm.testing.blocks import random_blocks, random_quant_tensor, rescale_blocks
from realm.testing.models import ARCHITECTURES, ArchSpec, write_model
from realm.testing.vocab import gpt2_vocab

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "gpt2_vocab",
    "random_blocks",
    "random_quant_tensor",
    "rescale_blocks",
    "write_model",
]
