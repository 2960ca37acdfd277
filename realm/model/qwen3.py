"""qwen3: the llama block with Q and K RMS-normed per head before RoPE, no biases, NEOX RoPE."""

from __future__ import annotations

from realm.backend import RopeMode
from realm.model.architecture import Architecture, register


@register
class Qwen3(Architecture):
    name = "qwen3"
    rope_mode = RopeMode.NEOX
    extra_layer_tensors = ("attn_q_norm", "attn_k_norm")
