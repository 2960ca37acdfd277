"""realm.testing: synthetic GGUF models and random valid quantized blocks."""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from realm.errors import UnsupportedModelError, UnsupportedQuantError
from realm.gguf.types import GGMLType, type_traits
from realm.quants import SUPPORTED_TYPES, dequantize
from realm.testing import (
    gpt2_vocab,
    random_blocks,
    random_quant_tensor,
    rescale_blocks,
    write_model,
)
from realm.testing.vocab import byte_to_unicode

LLAMA_BLOCK = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
               "ffn_up", "ffn_down"]


def read(path):
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    return reader, tensors


def field(reader, key):
    return reader.fields[key].contents()


def dequantized(tensor) -> np.ndarray:
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type)


# ----------------------------------------------------------------------------- write_model


def test_llama_file_has_llama_cpp_names_shapes_types_and_keys(tmp_path):
    path = write_model(tmp_path / "m.gguf", n_layer=2, n_embd=64, n_head=4, n_head_kv=2,
                       n_ff=96, n_vocab=300, n_ctx=128, qtype=GGMLType.Q8_0, rope_base=5e5)
    reader, tensors = read(path)
    expected = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(2) for n in LLAMA_BLOCK
    }
    assert set(tensors) == expected
    # GGUF lists dimensions innermost first.
    shapes = {
        "token_embd.weight": [64, 300], "output.weight": [64, 300], "output_norm.weight": [64],
        "blk.1.attn_q.weight": [64, 64], "blk.1.attn_k.weight": [64, 32],
        "blk.1.attn_v.weight": [64, 32], "blk.1.attn_output.weight": [64, 64],
        "blk.1.ffn_gate.weight": [64, 96], "blk.1.ffn_up.weight": [64, 96],
        "blk.1.ffn_down.weight": [96, 64], "blk.1.attn_norm.weight": [64],
    }
    for name, shape in shapes.items():
        assert [int(d) for d in tensors[name].shape] == shape, name
    for name, t in tensors.items():
        want = "F32" if name.endswith("norm.weight") else "Q8_0"
        assert t.tensor_type.name == want, name
    assert field(reader, "general.architecture") == "llama"
    keys = {"context_length": 128, "embedding_length": 64, "block_count": 2,
            "feed_forward_length": 96, "attention.head_count": 4,
            "attention.head_count_kv": 2, "rope.dimension_count": 16, "vocab_size": 300}
    for key, value in keys.items():
        assert field(reader, f"llama.{key}") == value, key
    assert field(reader, "llama.rope.freq_base") == 5e5
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "default"
    assert len(field(reader, "tokenizer.ggml.tokens")) == 300
    assert "<|im_start|>" in field(reader, "tokenizer.chat_template")


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    a = write_model(tmp_path / "a.gguf", seed=3).read_bytes()
    b = write_model(tmp_path / "b.gguf", seed=3).read_bytes()
    c = write_model(tmp_path / "c.gguf", seed=4).read_bytes()
    assert a == b
    assert len(a) == len(c) and a != c


def test_tied_embeddings_have_no_output_tensor(tmp_path):
    _, tensors = read(write_model(tmp_path / "m.gguf", tie_embeddings=True))
    assert "output.weight" not in tensors and "token_embd.weight" in tensors


@pytest.mark.parametrize(
    "arch,extra",
    [("qwen2", ["attn_q.bias", "attn_k.bias", "attn_v.bias"]),
     ("qwen3", ["attn_q_norm.weight", "attn_k_norm.weight"]),
     ("gemma3", ["attn_q_norm.weight", "attn_k_norm.weight", "post_attention_norm.weight",
                 "post_ffw_norm.weight"])],
)
def test_other_architectures_add_their_tensors(tmp_path, arch, extra):
    reader, tensors = read(write_model(tmp_path / "m.gguf", arch, n_layer=1, head_dim=32))
    expected = {f"blk.0.{n}.weight" for n in LLAMA_BLOCK} | {f"blk.0.{n}" for n in extra}
    assert {n for n in tensors if n.startswith("blk.")} == expected
    assert field(reader, "general.architecture") == arch
    for name in extra:
        t = tensors[f"blk.0.{name}"]
        assert t.tensor_type.name == "F32"
        # biases span all heads; q/k norms one head; post norms the embedding
        want = {"attn_q.bias": 128, "attn_k.bias": 64, "attn_v.bias": 64}.get(
            name, 32 if "_norm" in name and name.startswith("attn") else 64)
        assert int(t.shape[0]) == want, name
    if arch in ("qwen3", "gemma3"):
        assert field(reader, f"{arch}.attention.key_length") == 32
    if arch == "gemma3":
        assert field(reader, "gemma3.attention.sliding_window") == 16


def test_llama_rope_freq_factors_option(tmp_path):
    _, tensors = read(write_model(tmp_path / "m.gguf", n_layer=1, rope_freq_factors=True))
    factors = dequantized(tensors["rope_freqs.weight"])
    assert factors.shape == (8,) and factors.min() >= 1.0
    _, plain = read(write_model(tmp_path / "p.gguf", n_layer=1))
    assert "rope_freqs.weight" not in plain


def test_gemma3_sliding_window_option(tmp_path):
    reader, _ = read(write_model(tmp_path / "m.gguf", "gemma3", n_layer=1, sliding_window=5))
    assert field(reader, "gemma3.attention.sliding_window") == 5


@pytest.mark.parametrize("qtype", [GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.F16],
                         ids=lambda t: t.name)
def test_weights_are_scaled_to_fan_in_and_norms_near_one(tmp_path, qtype):
    path = write_model(tmp_path / "m.gguf", n_layer=1, n_embd=256, n_ff=512, n_head=4,
                       qtype=qtype, seed=1)
    _, tensors = read(path)
    for name, fan_in in (("blk.0.ffn_up.weight", 256), ("blk.0.ffn_down.weight", 512)):
        w = dequantized(tensors[name])
        assert np.isfinite(w).all()
        assert abs(w.std() * np.sqrt(fan_in) - 1.0) < 0.15, (name, w.std())
        assert abs(w.mean()) < 0.1 * w.std()
    norm = dequantized(tensors["blk.0.attn_norm.weight"])
    assert abs(norm.mean() - 1.0) < 0.05 and 0.05 < norm.std() < 0.2


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(UnsupportedQuantError, match=r"token_embd\.weight.*64.*Q4_K.*256"):
        write_model(tmp_path / "m.gguf", qtype=GGMLType.Q4_K)
    with pytest.raises(UnsupportedQuantError, match="Q8_K"):
        write_model(tmp_path / "m.gguf", n_embd=256, n_ff=256, qtype=GGMLType.Q8_K)
    with pytest.raises(UnsupportedModelError, match="mamba"):
        write_model(tmp_path / "m.gguf", "mamba")
    with pytest.raises(TypeError, match="sliding_window"):
        write_model(tmp_path / "m.gguf", "llama", sliding_window=4)


# ----------------------------------------------------------------------------- vocabulary


def tokenizer_from_gguf(path) -> Tokenizer:
    reader, _ = read(path)
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    bpe = models.BPE({t: i for i, t in enumerate(tokens)}, merges)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_vocabulary_tokenizes_text_into_real_merges(tmp_path):
    tok = tokenizer_from_gguf(write_model(tmp_path / "m.gguf"))
    text = "The capital of France is Paris. Hello, world! Ünïcødé 2024"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode()) / 2  # common words became multi-byte tokens
    assert tok.encode(" the").ids == [tok.token_to_id("Ġthe")]


def test_vocabulary_layout_and_padding():
    vocab = gpt2_vocab(2000)
    assert len(vocab) == 2000 and len(set(vocab.tokens)) == 2000
    assert vocab.tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert vocab.token_types[:3] == [gguf.TokenType.CONTROL] * 3
    assert vocab.tokens[3 : 3 + 256] == [byte_to_unicode()[b] for b in range(256)]
    assert vocab.tokens[vocab.bos_id] == "<|endoftext|>"
    assert vocab.tokens[vocab.eos_id] == "<|im_end|>"
    # Every merge joins two tokens into a token.
    known = set(vocab.tokens)
    for merge in vocab.merges:
        left, right = merge.split(" ")
        assert {left, right, left + right} <= known
    assert vocab.token_types[-1] == gguf.TokenType.UNUSED  # the text has < 1741 merges
    assert len(gpt2_vocab(300).merges) == 300 - 259
    assert gpt2_vocab(400) == gpt2_vocab(400)
    with pytest.raises(ValueError, match="at least 259"):
        gpt2_vocab(100)


# ----------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("qtype", sorted(GGMLType), ids=lambda t: t.name)
def test_random_blocks_are_valid(qtype):
    rng = np.random.default_rng(0)
    blocks = random_blocks(qtype, 64, rng)
    assert blocks.dtype == np.uint8 and blocks.shape == (64, type_traits(qtype).type_size)
    assert np.array_equal(blocks, random_blocks(qtype, 64, np.random.default_rng(0)))
    if qtype in SUPPORTED_TYPES:
        values = dequantize(blocks, qtype, (64 * type_traits(qtype).block_size,))
        assert np.isfinite(values).all()
        assert 0 < np.abs(values).max() < 1e4
        assert len(np.unique(values)) > 8  # not a constant pattern


def test_random_quant_tensor_shape_and_row_check():
    rng = np.random.default_rng(0)
    raw = random_quant_tensor(GGMLType.Q6_K, (3, 5, 512), rng)
    assert raw.shape == (3, 5, 2 * 210)
    with pytest.raises(UnsupportedQuantError, match="multiple of 256"):
        random_quant_tensor(GGMLType.Q4_K, (3, 100), rng)


@pytest.mark.parametrize("qtype", [GGMLType.Q4_1, GGMLType.Q2_K, GGMLType.IQ4_XS],
                         ids=lambda t: t.name)
def test_rescale_blocks_scales_decoded_values(qtype):
    shape = (4, 2 * type_traits(qtype).block_size)
    raw = random_quant_tensor(qtype, shape, np.random.default_rng(0))
    before = dequantize(raw, qtype, shape)
    after = dequantize(rescale_blocks(raw, qtype, 0.25), qtype, shape)
    # exact powers of two keep the float16 scales exact
    assert np.array_equal(after, before * np.float32(0.25))
