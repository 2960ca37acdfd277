"""Tiny GGUF models with random weights, written with gguf-py, for tests and benchmarks.

Tensor names and metadata keys follow llama.cpp (gguf-py's ``MODEL_TENSORS`` and
``Keys``). An architecture is a small `ArchSpec`: which extra tensors each block has,
which extra keys it writes and which options it takes, so a new family is a few lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import gguf.quants
import numpy as np

from realm.errors import UnsupportedModelError, UnsupportedQuantError
from realm.gguf.types import GGMLType, type_traits
from realm.quants import SUPPORTED_TYPES, dequantize
from realm.testing.blocks import random_quant_tensor, rescale_blocks
from realm.testing.vocab import CHATML_TEMPLATE, gpt2_vocab


@dataclass(frozen=True)
class Dims:
    """The sizes every tensor shape is computed from."""

    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int


# A block tensor: (name without "blk.N.", kind, shape from the dims). Kinds: "weight" is a
# matmul weight in the model's qtype, "norm" an F32 vector near 1, "bias" a small F32 vector.
BlockTensor = tuple[str, str, Callable[[Dims], tuple[int, ...]]]

LLAMA_BLOCK: tuple[BlockTensor, ...] = (
    ("attn_norm", "norm", lambda d: (d.n_embd,)),
    ("attn_q", "weight", lambda d: (d.n_head * d.head_dim, d.n_embd)),
    ("attn_k", "weight", lambda d: (d.n_head_kv * d.head_dim, d.n_embd)),
    ("attn_v", "weight", lambda d: (d.n_head_kv * d.head_dim, d.n_embd)),
    ("attn_output", "weight", lambda d: (d.n_embd, d.n_head * d.head_dim)),
    ("ffn_norm", "norm", lambda d: (d.n_embd,)),
    ("ffn_gate", "weight", lambda d: (d.n_ff, d.n_embd)),
    ("ffn_up", "weight", lambda d: (d.n_ff, d.n_embd)),
    ("ffn_down", "weight", lambda d: (d.n_embd, d.n_ff)),
)
QKV_BIASES: tuple[BlockTensor, ...] = (
    ("attn_q.bias", "bias", lambda d: (d.n_head * d.head_dim,)),
    ("attn_k.bias", "bias", lambda d: (d.n_head_kv * d.head_dim,)),
    ("attn_v.bias", "bias", lambda d: (d.n_head_kv * d.head_dim,)),
)
QK_NORMS: tuple[BlockTensor, ...] = (
    ("attn_q_norm", "norm", lambda d: (d.head_dim,)),
    ("attn_k_norm", "norm", lambda d: (d.head_dim,)),
)
POST_NORMS: tuple[BlockTensor, ...] = (
    ("post_attention_norm", "norm", lambda d: (d.n_embd,)),
    ("post_ffw_norm", "norm", lambda d: (d.n_embd,)),
)


@dataclass(frozen=True)
class ArchSpec:
    """What sets one architecture's synthetic file apart from llama's."""

    block: tuple[BlockTensor, ...] = LLAMA_BLOCK
    rms_eps: float = 1e-5
    # Real files of these families store head sizes explicitly.
    write_head_dims: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # option -> default
    # Extra metadata from the options: (writer, options) -> None.
    extra_keys: Callable[[gguf.GGUFWriter, dict[str, Any]], None] = lambda w, o: None
    # Extra model-wide F32 tensors from the options: (dims, options, rng) -> {name: values}.
    extra_tensors: Callable[[Dims, dict[str, Any], np.random.Generator],
                            dict[str, np.ndarray]] = lambda d, o, r: {}


def _gemma3_keys(writer: gguf.GGUFWriter, options: dict[str, Any]) -> None:
    writer.add_sliding_window(int(options["sliding_window"]))


def _llama_rope_freqs(dims: Dims, options: dict[str, Any], rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
    # Llama 3 style long-context rope: one divisor (>= 1) per rotated pair.
    if not options["rope_freq_factors"]:
        return {}
    return {"rope_freqs.weight": rng.uniform(1.0, 8.0, dims.head_dim // 2).astype(np.float32)}


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec(options={"rope_freq_factors": False}, extra_tensors=_llama_rope_freqs),
    "qwen2": ArchSpec(block=LLAMA_BLOCK + QKV_BIASES, rms_eps=1e-6),
    "qwen3": ArchSpec(block=LLAMA_BLOCK + QK_NORMS, rms_eps=1e-6, write_head_dims=True),
    "gemma3": ArchSpec(
        block=LLAMA_BLOCK + QK_NORMS + POST_NORMS,
        rms_eps=1e-6,
        write_head_dims=True,
        options={"sliding_window": 16},
        extra_keys=_gemma3_keys,
    ),
}

# Types gguf-py can encode from floats; others get random valid blocks scaled to size.
_GGUF_QUANTIZABLE = {
    GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.BF16,
    GGMLType.TQ1_0, GGMLType.TQ2_0, GGMLType.MXFP4,
}


def encode_weight(name: str, values: np.ndarray, qtype: GGMLType, rng: np.random.Generator
                  ) -> tuple[np.ndarray, GGMLType | None]:
    """Encode float `values` [rows, cols] as `qtype`: (array for GGUFWriter, raw_dtype).

    Types gguf-py cannot quantize (K-quants, IQ types) get random valid blocks rescaled
    so the tensor has the same standard deviation as `values`.
    """
    if qtype not in SUPPORTED_TYPES:
        raise UnsupportedQuantError(
            f"tensor {name!r}: realm cannot decode {qtype.name}, so it writes no model in it"
        )
    block = type_traits(qtype).block_size
    if values.shape[-1] % block:
        raise UnsupportedQuantError(
            f"tensor {name!r} has rows of {values.shape[-1]} elements, which {qtype.name} "
            f"cannot hold (its blocks are {block} elements); choose sizes that are multiples "
            f"of {block} or another qtype"
        )
    if qtype == GGMLType.F32:
        return values.astype(np.float32), None
    if qtype == GGMLType.F16:
        return values.astype(np.float16), None
    if qtype == GGMLType.F64:
        return values.astype(np.float64), None
    gtype = gguf.GGMLQuantizationType[qtype.name]
    if qtype in _GGUF_QUANTIZABLE:
        return gguf.quants.quantize(values.astype(np.float32), gtype), gtype
    raw = random_quant_tensor(qtype, values.shape, rng)
    actual_std = float(dequantize(raw, qtype, values.shape).std())
    raw = rescale_blocks(raw, qtype, float(values.std()) / actual_std)
    return raw, gtype


def write_model(
    path: str | Path,
    arch: str = "llama",
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    head_dim: int | None = None,
    n_ff: int = 128,
    n_vocab: int | None = None,
    n_ctx: int = 256,
    qtype: GGMLType = GGMLType.Q4_0,
    seed: int = 0,
    tie_embeddings: bool = False,
    rope_base: float = 10000.0,
    metadata: dict[str, Any] | None = None,
    **arch_options: Any,
) -> Path:
    """Write a random-weight `arch` model with a byte-level BPE vocabulary to `path`.

    Matmul weights and the embeddings use `qtype`; norms and biases are F32. Weights are
    N(0, 1/sqrt(fan_in)) so activations stay near unit scale; norms are near 1. The
    vocabulary has `n_vocab` tokens (default 512, see `realm.testing.vocab.gpt2_vocab`).
    The same arguments always give the same file.

    Architectures (``ARCHITECTURES``) and their options: llama (``rope_freq_factors=True``
    adds a ``rope_freqs.weight`` tensor); qwen2 (q/k/v biases); qwen3 (q/k norms); gemma3
    (q/k norms, post norms, ``sliding_window=16``; real gemma3 files tie embeddings).
    ``metadata`` sets keys after the usual ones are written, replacing them (a value of None
    removes the key): how tests build files with broken or hostile hyperparameters.

    >>> p = write_model(tmp_path / "tiny.gguf", n_layer=1)        # doctest: +SKIP
    """
    spec = ARCHITECTURES.get(arch)
    if spec is None:
        raise UnsupportedModelError(
            f"write_model knows architectures {sorted(ARCHITECTURES)}, not {arch!r}"
        )
    unknown = set(arch_options) - set(spec.options)
    if unknown:
        raise TypeError(f"write_model({arch!r}) got unknown options {sorted(unknown)}; "
                        f"it takes {sorted(spec.options) or 'none'}")
    options = {**spec.options, **arch_options}
    qtype = GGMLType(qtype)
    head_dim = head_dim or n_embd // n_head
    vocab = gpt2_vocab(n_vocab)
    dims = Dims(n_embd, n_head, n_head_kv, head_dim, n_ff, len(vocab))
    rng = np.random.default_rng(seed)
    path = Path(path)

    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"realm synthetic {arch}")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_rope_freq_base(rope_base)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(vocab))
    if spec.write_head_dims or head_dim != n_embd // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    spec.extra_keys(writer, options)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    def add(name: str, kind: str, shape: tuple[int, ...]) -> None:
        if kind == "norm":
            writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32))
        elif kind == "bias":
            writer.add_tensor(name, (0.1 * rng.standard_normal(shape)).astype(np.float32))
        else:  # a matmul weight [out, in]: std 1/sqrt(fan_in) keeps outputs near unit scale
            values = rng.standard_normal(shape) / np.sqrt(shape[-1])
            data, raw_dtype = encode_weight(name, values, qtype, rng)
            writer.add_tensor(name, data, raw_dtype=raw_dtype)

    add("token_embd.weight", "weight", (dims.n_vocab, n_embd))
    for name, values in spec.extra_tensors(dims, options, rng).items():
        writer.add_tensor(name, values)
    for il in range(n_layer):
        for name, kind, shape_of in spec.block:
            suffix = "" if name.endswith(".bias") else ".weight"
            add(f"blk.{il}.{name}{suffix}", kind, shape_of(dims))
    add("output_norm.weight", "norm", (n_embd,))
    if not tie_embeddings:
        add("output.weight", "weight", (dims.n_vocab, n_embd))

    for key, value in (metadata or {}).items():
        _override_key(writer, key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _override_key(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    kv = writer.kv_data[0]
    if value is None:
        kv.pop(key, None)
        return
    if isinstance(value, np.ndarray):  # a numeric array: the element type follows the dtype
        sub = gguf.GGUFValueType.FLOAT32 if value.dtype.kind == "f" else gguf.GGUFValueType.INT32
        kv[key] = gguf.GGUFValue(value=value.tolist(), type=gguf.GGUFValueType.ARRAY, sub_type=sub)
        return
    vtype = gguf.GGUFValueType.get_type(value)
    if vtype == gguf.GGUFValueType.INT32 and not -(1 << 31) <= value < 1 << 31:
        vtype = gguf.GGUFValueType.INT64
    kv[key] = gguf.GGUFValue(value=value, type=vtype)
