"""Model hyperparameters, read from a GGUF file's ``{arch}.*`` metadata keys.

There is no table of known model names: everything comes from the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from realm.errors import GGUFFormatError, UnsupportedModelError


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    rms_eps: float
    rope_base: float
    rope_dim: int
    rope_freq_scale: float = 1.0
    sliding_window: int | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv

    @classmethod
    def from_gguf(cls, metadata: dict[str, Any], n_vocab_hint: int | None = None) -> ModelConfig:
        """Read the hyperparameters of the architecture that ``general.architecture`` names.

        >>> cfg = ModelConfig.from_gguf(read_gguf("model.gguf").metadata)   # doctest: +SKIP
        >>> cfg.n_layer, cfg.n_head, cfg.head_dim_k                          # doctest: +SKIP
        (30, 9, 64)
        """
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise UnsupportedModelError(
                "the file has no 'general.architecture' key: it is not a model GGUF realm can run"
            )
        keys = _ArchKeys(metadata, arch)
        n_embd = keys.int("embedding_length")
        n_head = keys.int("attention.head_count")
        n_head_kv = keys.int("attention.head_count_kv", default=n_head)
        if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv:
            raise GGUFFormatError(
                f"{arch}.attention.head_count ({n_head}) must be a positive multiple of "
                f"{arch}.attention.head_count_kv ({n_head_kv})"
            )
        head_dim_k = keys.int("attention.key_length", default=n_embd // n_head)
        head_dim_v = keys.int("attention.value_length", default=head_dim_k)
        tokens = metadata.get("tokenizer.ggml.tokens")
        n_vocab = keys.int(
            "vocab_size",
            default=len(tokens) if tokens is not None else (n_vocab_hint or 0),
        )
        if n_vocab <= 0:
            raise GGUFFormatError(f"cannot tell the vocabulary size: no {arch}.vocab_size key and no tokens")
        rope_scale = 1.0
        scaling_type = metadata.get(f"{arch}.rope.scaling.type", "none")
        if f"{arch}.rope.scale_linear" in metadata and scaling_type == "none":
            # the key older converters wrote for linear scaling
            factor = keys.float("rope.scale_linear")
            if factor <= 0:
                raise GGUFFormatError(f"{arch}.rope.scale_linear must be > 0, got {factor}")
            rope_scale = 1.0 / factor
        elif scaling_type == "linear":
            factor = keys.float("rope.scaling.factor", default=1.0)
            if factor <= 0:
                raise GGUFFormatError(f"{arch}.rope.scaling.factor must be > 0, got {factor}")
            rope_scale = 1.0 / factor
        elif scaling_type not in ("none", "", None):
            raise UnsupportedModelError(
                f"{arch}.rope.scaling.type = {scaling_type!r} is not supported (supported: none, linear)"
            )
        cfg = cls(
            arch=arch,
            n_vocab=n_vocab,
            n_ctx_train=keys.int("context_length"),
            n_embd=n_embd,
            n_layer=keys.int("block_count"),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim_k=head_dim_k,
            head_dim_v=head_dim_v,
            n_ff=keys.int("feed_forward_length"),
            rms_eps=keys.float("attention.layer_norm_rms_epsilon"),
            rope_base=keys.float("rope.freq_base", default=10000.0),
            rope_dim=keys.int("rope.dimension_count", default=head_dim_k),
            rope_freq_scale=rope_scale,
            sliding_window=keys.optional_int("attention.sliding_window"),
            attn_softcap=keys.optional_float("attn_logit_softcapping"),
            final_softcap=keys.optional_float("final_logit_softcapping"),
        )
        for name in ("n_embd", "n_layer", "n_ff", "n_ctx_train", "head_dim_k", "head_dim_v"):
            if getattr(cfg, name) <= 0:
                raise GGUFFormatError(f"{arch}: {name} must be positive, got {getattr(cfg, name)}")
        if cfg.rope_dim > cfg.head_dim_k or cfg.rope_dim % 2:
            raise GGUFFormatError(
                f"{arch}.rope.dimension_count ({cfg.rope_dim}) must be even and at most the head size "
                f"({cfg.head_dim_k})"
            )
        if not math.isfinite(cfg.rms_eps) or cfg.rms_eps <= 0:
            raise GGUFFormatError(f"{arch}.attention.layer_norm_rms_epsilon must be > 0, got {cfg.rms_eps}")
        return cfg


class _ArchKeys:
    """Typed access to ``{arch}.<name>`` keys with errors that name the key."""

    def __init__(self, metadata: dict[str, Any], arch: str) -> None:
        self.metadata = metadata
        self.arch = arch

    _MISSING = object()

    def _get(self, name: str, default: Any) -> Any:
        key = f"{self.arch}.{name}"
        value = self.metadata.get(key, default)
        if value is self._MISSING:
            raise GGUFFormatError(f"required key {key!r} is missing from the GGUF metadata")
        if isinstance(value, np.ndarray):
            # some files store per-layer values; realm runs models where they are uniform
            if value.size == 0 or not np.all(value == value.flat[0]):
                raise UnsupportedModelError(f"{key!r} varies per layer ({value.tolist()}); not supported")
            value = value.flat[0].item()
        return value

    def int(self, name: str, default: Any = _MISSING) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise GGUFFormatError(f"key '{self.arch}.{name}' must be an integer, got {value!r}")
        return int(value)

    def float(self, name: str, default: Any = _MISSING) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise GGUFFormatError(f"key '{self.arch}.{name}' must be a number, got {value!r}")
        return float(value)

    def optional_int(self, name: str) -> int | None:
        return self.int(name) if f"{self.arch}.{name}" in self.metadata else None

    def optional_float(self, name: str) -> float | None:
        return self.float(name) if f"{self.arch}.{name}" in self.metadata else None
