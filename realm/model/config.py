"""Model hyperparameters, read from a GGUF file's ``{arch}.*`` metadata keys.

There is no table of known model names: everything comes from the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from realm.arguments import is_int, is_number
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
    def from_gguf(cls, metadata: dict[str, Any], source: object = "the model file") -> ModelConfig:
        """Read and range-check the hyperparameters of the architecture ``general.architecture`` names.

        Every value realm uses is checked here, once, where it enters: a bad one raises
        `GGUFFormatError` naming ``source`` (the file), the key, the value and the range expected,
        instead of a forward pass that quietly produces NaN.

        >>> cfg = ModelConfig.from_gguf(read_gguf("model.gguf").metadata)   # doctest: +SKIP
        >>> cfg.n_layer, cfg.n_head, cfg.head_dim_k                          # doctest: +SKIP
        (30, 9, 64)
        """
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise UnsupportedModelError(
                f"{source}: no 'general.architecture' key: it is not a model GGUF realm can run"
            )
        keys = _ArchKeys(metadata, arch, source)
        n_embd = keys.int("embedding_length", maximum=MAX_WIDTH)
        n_head = keys.int("attention.head_count", maximum=MAX_HEADS)
        n_head_kv = keys.int("attention.head_count_kv", default=n_head, maximum=n_head)
        if n_head % n_head_kv:
            raise keys.error(
                "attention.head_count_kv",
                n_head_kv,
                f"a divisor of {arch}.attention.head_count ({n_head})",
            )
        head_dim_k = keys.int("attention.key_length", default=max(1, n_embd // n_head), maximum=MAX_HEAD_DIM)
        head_dim_v = keys.int("attention.value_length", default=head_dim_k, maximum=MAX_HEAD_DIM)
        cfg = cls(
            arch=arch,
            n_vocab=_vocab_size(keys, metadata.get("tokenizer.ggml.tokens")),
            n_ctx_train=keys.int("context_length", maximum=MAX_CONTEXT),
            n_embd=n_embd,
            n_layer=keys.int("block_count", maximum=MAX_LAYERS),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim_k=head_dim_k,
            head_dim_v=head_dim_v,
            n_ff=keys.int("feed_forward_length", maximum=MAX_FFN),
            rms_eps=keys.float("attention.layer_norm_rms_epsilon", maximum=1.0),
            rope_base=keys.float("rope.freq_base", default=10000.0),
            rope_dim=keys.int("rope.dimension_count", default=head_dim_k, maximum=head_dim_k, even=True),
            rope_freq_scale=_rope_freq_scale(keys, metadata),
            sliding_window=keys.optional_int("attention.sliding_window", maximum=MAX_CONTEXT),
            attn_softcap=keys.optional_float("attn_logit_softcapping"),
            final_softcap=keys.optional_float("final_logit_softcapping"),
        )
        return cfg


# Upper bounds far past any real model (the largest today: ~16k-wide, 126 layers, 128 heads,
# 10M-token contexts) that still stop a hostile value before it sizes an allocation.
MAX_WIDTH = 1 << 20
MAX_HEADS = 1 << 12
MAX_HEAD_DIM = 1 << 12
MAX_LAYERS = 1 << 12
MAX_FFN = 1 << 22
MAX_CONTEXT = 1 << 27
MAX_VOCAB = 1 << 24


def _vocab_size(keys: _ArchKeys, tokens: Any) -> int:
    """The number of tokens, which the embedding rows and the tokenizer must both match."""
    if tokens is None:
        raise keys.error_key("tokenizer.ggml.tokens", "missing", "the array of token texts")
    if isinstance(tokens, (str, bytes, np.ndarray)) or not isinstance(tokens, Sequence):
        raise keys.error_key("tokenizer.ggml.tokens", _short(tokens), "an array of strings")
    n_vocab = len(tokens)
    if not 1 <= n_vocab <= MAX_VOCAB:
        raise keys.error_key("tokenizer.ggml.tokens", f"{n_vocab} tokens", f"1..{MAX_VOCAB} tokens")
    declared = keys.optional_int("vocab_size", maximum=MAX_VOCAB)
    if declared is not None and declared != n_vocab:
        raise keys.error(
            "vocab_size",
            declared,
            f"the number of tokens in tokenizer.ggml.tokens ({n_vocab})",
        )
    return n_vocab


def _rope_freq_scale(keys: _ArchKeys, metadata: dict[str, Any]) -> float:
    arch = keys.arch
    scaling_type = metadata.get(f"{arch}.rope.scaling.type", "none")
    if not isinstance(scaling_type, str):
        raise keys.error("rope.scaling.type", scaling_type, "a string such as 'none' or 'linear'")
    if f"{arch}.rope.scale_linear" in metadata and scaling_type == "none":
        return 1.0 / keys.float("rope.scale_linear")  # the key older converters wrote
    if scaling_type == "linear":
        return 1.0 / keys.float("rope.scaling.factor", default=1.0)
    if scaling_type not in ("none", ""):
        raise UnsupportedModelError(
            f"{keys.source}: {arch}.rope.scaling.type = {_short(scaling_type)} is not supported "
            "(supported: none, linear)"
        )
    return 1.0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _ArchKeys:
    """Typed, range-checked access to ``{arch}.<name>`` keys, with errors naming file and key."""

    def __init__(self, metadata: dict[str, Any], arch: str, source: object) -> None:
        self.metadata = metadata
        self.arch = arch
        self.source = source

    _MISSING = object()

    def error_key(self, key: str, found: Any, expected: str) -> GGUFFormatError:
        return GGUFFormatError(
            f"{self.source}: metadata key {key!r} is {found}; expected {expected}. "
            "The file is corrupt or was written by a broken converter: convert the model again"
        )

    def error(self, name: str, value: Any, expected: str) -> GGUFFormatError:
        return self.error_key(f"{self.arch}.{name}", _short(value), expected)

    def _get(self, name: str, default: Any) -> Any:
        key = f"{self.arch}.{name}"
        value = self.metadata.get(key, default)
        if value is self._MISSING:
            raise GGUFFormatError(f"{self.source}: required key {key!r} is missing from the GGUF metadata")
        if isinstance(value, np.ndarray):
            # some files store per-layer values; realm runs models where they are uniform
            if value.size == 0 or not np.all(value == value.flat[0]):
                raise UnsupportedModelError(
                    f"{self.source}: {key!r} varies per layer ({_short(value.tolist())}); not supported"
                )
            value = value.flat[0].item()
        return value

    def int(self, name: str, default: Any = _MISSING, *, maximum: int, even: bool = False) -> int:
        """An integer in ``1..maximum`` (and even, when asked)."""
        value = self._get(name, default)
        if not is_int(value):
            raise self.error(name, value, f"an integer in 1..{maximum}")
        if not 1 <= value <= maximum or (even and value % 2):
            raise self.error(name, value, f"an {'even ' if even else ''}integer in 1..{maximum}")
        return int(value)

    def float(self, name: str, default: Any = _MISSING, *, maximum: float = math.inf) -> float:
        """A finite number > 0 (and at most ``maximum``)."""
        value = self._get(name, default)
        expected = "a finite number > 0" + (f" and <= {maximum}" if maximum < math.inf else "")
        if not is_number(value):  # NaN included: refused with the same message below
            raise self.error(name, value, expected)
        value = float(value)
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise self.error(name, value, expected)
        return value

    def optional_int(self, name: str, *, maximum: int) -> int | None:
        return self.int(name, maximum=maximum) if f"{self.arch}.{name}" in self.metadata else None

    def optional_float(self, name: str) -> float | None:
        return self.float(name) if f"{self.arch}.{name}" in self.metadata else None
