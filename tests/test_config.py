"""ModelConfig from metadata: defaults, RoPE scaling keys and the errors for bad values."""

from __future__ import annotations

import pytest

from realm.errors import GGUFFormatError, UnsupportedModelError
from realm.model.config import ModelConfig


def meta(**extra):
    base = {
        "general.architecture": "llama",
        "llama.context_length": 4096,
        "llama.embedding_length": 256,
        "llama.block_count": 4,
        "llama.feed_forward_length": 512,
        "llama.attention.head_count": 8,
        "llama.attention.head_count_kv": 2,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.tokens": ["a"] * 100,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def test_defaults_derive_from_the_required_keys():
    cfg = ModelConfig.from_gguf(meta())
    assert (cfg.head_dim_k, cfg.head_dim_v, cfg.rope_dim, cfg.n_vocab) == (32, 32, 32, 100)
    assert cfg.rope_base == 10000.0 and cfg.rope_freq_scale == 1.0 and cfg.n_gqa == 4


def test_linear_rope_scaling_keys():
    cfg = ModelConfig.from_gguf(
        meta(**{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0})
    )
    assert cfg.rope_freq_scale == 0.25
    cfg = ModelConfig.from_gguf(meta(**{"llama.rope.scale_linear": 2.0}))
    assert cfg.rope_freq_scale == 0.5


def test_unsupported_rope_scaling_is_refused():
    with pytest.raises(UnsupportedModelError, match="yarn"):
        ModelConfig.from_gguf(meta(**{"llama.rope.scaling.type": "yarn"}))


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"llama.block_count": None}, "llama.block_count"),
        ({"llama.attention.head_count_kv": 3}, "head_count_kv"),
        ({"llama.embedding_length": "big"}, "llama.embedding_length"),
        ({"llama.attention.layer_norm_rms_epsilon": 0.0}, "layer_norm_rms_epsilon"),
        ({"llama.rope.dimension_count": 33}, "rope.dimension_count"),
        ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 0.0}, "scaling.factor"),
    ],
)
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(GGUFFormatError, match=key.replace(".", r"\.")):
        ModelConfig.from_gguf(meta(**changes))


def test_no_architecture_key():
    with pytest.raises(UnsupportedModelError, match="general.architecture"):
        ModelConfig.from_gguf({})
