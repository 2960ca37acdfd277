"""llama: the shared block as it is (SmolLM2, TinyLlama, Llama 2/3, Mistral-style files).

llama GGUFs store Q and K permuted for NORMAL (adjacent-pair) RoPE. Llama 3.x files may carry
per-dimension RoPE frequency factors in a ``rope_freqs`` tensor, which the model layer applies
whenever the file has one.
"""

from __future__ import annotations

from realm.backend import RopeMode
from realm.model.architecture import Architecture, register


@register
class Llama(Architecture):
    name = "llama"
    rope_mode = RopeMode.NORMAL
    ffn_activation = "swiglu"
