"""Helpers for testing and benchmarking realm: random valid quantized data, tiny GGUF models.

>>> import numpy as np
>>> from realm.gguf.types import GGMLType
>>> random_quant_tensor(GGMLType.Q8_0, (4, 64), np.random.default_rng(0)).shape
(4, 68)
"""

from realm.testing.blocks import random_blocks, random_quant_tensor

__all__ = ["random_blocks", "random_quant_tensor"]
