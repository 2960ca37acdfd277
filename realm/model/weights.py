"""Moving a GGUF file's tensors onto a backend, checked against the model's config.

Matrices go up as their quantized blocks (`QuantTensor`); vectors (norm weights, biases,
RoPE frequency factors) are tiny and go up as float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from realm.backend import Backend, QuantTensor
from realm.errors import GGUFFormatError, UnsupportedModelError, UnsupportedQuantError
from realm.gguf.reader import GGUFFile
from realm.model.architecture import CORE_LAYER_TENSORS, Architecture
from realm.model.config import ModelConfig
from realm.quants import dequantize as reference_dequantize


@dataclass
class LayerWeights:
    """One block's tensors by short name ("attn_q", "attn_q.bias", "attn_q_norm", ...)."""

    tensors: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.tensors[name]

    def get(self, name: str) -> Any:
        return self.tensors.get(name)


@dataclass
class ModelWeights:
    token_embd: QuantTensor
    output: QuantTensor  # token_embd itself when the file ties the embeddings
    output_norm: Any
    layers: list[LayerWeights]
    rope_freqs: Any = None


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The numpy-order shape of each per-layer tensor, for checking a file before running it."""
    q_dim, kv_dim, v_dim = (
        cfg.n_head * cfg.head_dim_k,
        cfg.n_head_kv * cfg.head_dim_k,
        cfg.n_head_kv * cfg.head_dim_v,
    )
    return {
        "attn_norm": (cfg.n_embd,),
        "attn_q": (q_dim, cfg.n_embd),
        "attn_k": (kv_dim, cfg.n_embd),
        "attn_v": (v_dim, cfg.n_embd),
        "attn_output": (cfg.n_embd, cfg.n_head * cfg.head_dim_v),
        "attn_q.bias": (q_dim,),
        "attn_k.bias": (kv_dim,),
        "attn_v.bias": (v_dim,),
        "attn_q_norm": (cfg.head_dim_k,),
        "attn_k_norm": (cfg.head_dim_k,),
        "post_attention_norm": (cfg.n_embd,),
        "ffn_norm": (cfg.n_embd,),
        "ffn_gate": (cfg.n_ff, cfg.n_embd),
        "ffn_up": (cfg.n_ff, cfg.n_embd),
        "ffn_down": (cfg.n_embd, cfg.n_ff),
        "post_ffw_norm": (cfg.n_embd,),
    }


def _tensor_key(short: str) -> str:
    # "attn_q.bias" -> "attn_q.bias"; "attn_q" -> "attn_q.weight"
    return short if short.endswith(".bias") else f"{short}.weight"


class WeightLoader:
    """Uploads a checked set of tensors from ``gguf`` to ``backend``."""

    def __init__(self, gguf: GGUFFile, backend: Backend, cfg: ModelConfig, arch: Architecture) -> None:
        self.gguf = gguf
        self.backend = backend
        self.cfg = cfg
        self.arch = arch
        self.used: set[str] = set()

    def _info(self, name: str):
        info = self.gguf.tensors.get(name)
        if info is None:
            raise UnsupportedModelError(
                f"{self.gguf.path}: tensor {name!r} is missing; a {self.cfg.arch} model needs it"
            )
        return info

    def _check_shape(self, name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
        if tuple(shape) != tuple(expected):
            raise GGUFFormatError(
                f"{self.gguf.path}: tensor {name!r} has shape {tuple(shape)}, expected {tuple(expected)} "
                "from the file's hyperparameters"
            )

    def vector(self, name: str, expected: tuple[int, ...]) -> Any:
        info = self._info(name)
        self._check_shape(name, info.shape, expected)
        self.used.add(name)
        host = reference_dequantize(self.gguf.tensor_data(name), info.qtype, info.shape, name=name)
        return self.backend.upload(np.ascontiguousarray(host, dtype=np.float32))

    def matrix(
        self, name: str, expected: tuple[int, ...] | None, ops: tuple[str, ...] = ("matmul",)
    ) -> QuantTensor:
        info = self._info(name)
        if expected is not None:
            self._check_shape(name, info.shape, expected)
        for op in ops:
            if not self.backend.supports(op, info.qtype):
                raise UnsupportedQuantError(
                    f"{self.gguf.path}: tensor {name!r} is {info.qtype.name}, which backend "
                    f"{self.backend.name!r} cannot run for {op}"
                )
        self.used.add(name)
        return self.backend.upload_quant(self.gguf.tensor_data(name), info.qtype, info.shape, name=name)

    def load(self, progress: Callable[[int], None] | None = None) -> ModelWeights:
        cfg, arch = self.cfg, self.arch
        shapes = expected_shapes(cfg)
        tied = "output.weight" not in self.gguf.tensors  # the output projection reuses token_embd
        token_embd = self.matrix(
            "token_embd.weight",
            (cfg.n_vocab, cfg.n_embd),
            ops=("get_rows", "matmul") if tied else ("get_rows",),
        )
        output = token_embd if tied else self.matrix("output.weight", (cfg.n_vocab, cfg.n_embd))
        output_norm = self.vector("output_norm.weight", (cfg.n_embd,))
        rope_freqs = None
        if "rope_freqs.weight" in self.gguf.tensors:
            rope_freqs = self.vector("rope_freqs.weight", (cfg.rope_dim // 2,))
        layers = []
        for il in range(cfg.n_layer):
            layer = LayerWeights()
            names = [*CORE_LAYER_TENSORS, *arch.extra_layer_tensors]
            names += [
                n for n in arch.optional_layer_tensors if f"blk.{il}.{_tensor_key(n)}" in self.gguf.tensors
            ]
            for short in names:
                full = f"blk.{il}.{_tensor_key(short)}"
                shape = shapes[short]
                layer.tensors[short] = (
                    self.vector(full, shape) if len(shape) == 1 else self.matrix(full, shape)
                )
            layers.append(layer)
            if progress is not None:
                progress(il + 1)
        unused = [n for n in self.gguf.tensors if n not in self.used]
        if unused:
            raise UnsupportedModelError(
                f"{self.gguf.path}: tensors {unused[:5]}{' ...' if len(unused) > 5 else ''} are not part of "
                f"the {cfg.arch} architecture as realm implements it; running without them would give "
                "wrong results"
            )
        return ModelWeights(token_embd, output, output_norm, layers, rope_freqs)
