"""A model file described in a dict: what `realm info` prints and `Model.info` builds on."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from realm.gguf.reader import GGUFFile
from realm.model.config import ModelConfig


def describe(gguf: GGUFFile, cfg: ModelConfig) -> dict[str, Any]:
    """Architecture, hyperparameters, parameter count, tensor types and sizes of a GGUF model."""
    tensors = list(gguf.tensors.values())
    n_params = sum(math.prod(t.shape) for t in tensors)
    types = Counter(t.qtype.name for t in tensors)
    hyper = {k: v for k, v in vars(cfg).items() if k not in ("arch", "extra") and v is not None}
    return {
        "path": str(gguf.path),
        "name": gguf.metadata.get("general.name"),
        "architecture": cfg.arch,
        "gguf_version": gguf.version,
        "file_size": gguf.file_size,
        "parameters": n_params,
        "bits_per_weight": round(8 * sum(t.nbytes for t in tensors) / max(n_params, 1), 2),
        "tensors": len(tensors),
        "tensor_types": dict(types.most_common()),
        "tokenizer": gguf.metadata.get("tokenizer.ggml.model"),
        "chat_template": "tokenizer.chat_template" in gguf.metadata,
        "hyperparameters": hyper,
    }
