"""qwen2: the llama block with biases on the Q, K and V projections, and NEOX RoPE."""

from __future__ import annotations

from realm.backend import RopeMode
from realm.model.architecture import Architecture, register


@register
class Qwen2(Architecture):
    name = "qwen2"
    rope_mode = RopeMode.NEOX
    extra_layer_tensors = ("attn_q.bias", "attn_k.bias", "attn_v.bias")
