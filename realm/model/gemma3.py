"""gemma3: Gemma 3's differences from the llama block.

- token embeddings scaled by sqrt(n_embd);
- Q and K RMS-normed per head, attention scaled by 1/sqrt(key_length);
- post-attention and post-FFN norms (the converter already stored every norm weight as 1 + w);
- GeGLU feed-forward (tanh-approximated GELU);
- NEOX RoPE; five sliding-window layers (their own RoPE base, 10000, and no frequency scaling)
  then one global layer, repeating;
- the output projection tied to the token embeddings.
"""

from __future__ import annotations

import math
from typing import Any

from realm.backend import RopeMode
from realm.errors import GGUFFormatError
from realm.model.architecture import Architecture, register
from realm.model.config import ModelConfig

SWA_PATTERN = 6  # layer il is global when il % 6 == 5
SWA_ROPE_BASE = 10000.0


@register
class Gemma3(Architecture):
    name = "gemma3"
    rope_mode = RopeMode.NEOX
    ffn_activation = "geglu"
    extra_layer_tensors = ("attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm")

    def __init__(self, config: ModelConfig, metadata: dict[str, Any]) -> None:
        super().__init__(config, metadata)
        if not config.sliding_window or config.sliding_window < 1:
            raise GGUFFormatError("gemma3 needs a positive 'gemma3.attention.sliding_window' key")

    def embedding_scale(self) -> float:
        return math.sqrt(self.config.n_embd)

    def is_sliding(self, il: int) -> bool:
        return il % SWA_PATTERN < SWA_PATTERN - 1

    def layer_window(self, il: int) -> int | None:
        return self.config.sliding_window if self.is_sliding(il) else None

    def layer_rope(self, il: int) -> tuple[float, float]:
        if self.is_sliding(il):
            return SWA_ROPE_BASE, 1.0
        return self.config.rope_base, self.config.rope_freq_scale
