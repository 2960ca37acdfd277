"""What a model family may change in the shared transformer block, and the family registry.

Each family is a small subclass in its own file (``llama.py``, ``gemma3.py``, ...), the way
llama.cpp keeps one builder per architecture in ``src/models/``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from realm.backend import RopeMode
from realm.errors import UnsupportedModelError
from realm.model.config import ModelConfig

# Per-layer tensors every family built on the shared block has ("blk.N.<name>.weight").
CORE_LAYER_TENSORS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)


class Architecture:
    """The llama block is the default; a family overrides only what differs."""

    name: ClassVar[str] = ""
    rope_mode: ClassVar[RopeMode] = RopeMode.NORMAL
    ffn_activation: ClassVar[str] = "swiglu"  # or "geglu"
    # Extra per-layer tensors this family reads (e.g. "attn_q_norm", "attn_q.bias").
    extra_layer_tensors: ClassVar[tuple[str, ...]] = ()
    # Extra per-layer tensors that a file of this family may or may not have.
    optional_layer_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ModelConfig, metadata: dict[str, Any]) -> None:
        self.config = config

    def embedding_scale(self) -> float | None:
        """A factor applied to token embeddings (gemma: sqrt(n_embd)); None for none."""
        return None

    def attention_scale(self) -> float:
        return 1.0 / math.sqrt(self.config.head_dim_k)

    def layer_window(self, il: int) -> int | None:
        """The sliding-window size of layer ``il``, or None for full causal attention."""
        return None

    def layer_rope(self, il: int) -> tuple[float, float]:
        """RoPE ``(base, freq_scale)`` of layer ``il``."""
        return self.config.rope_base, self.config.rope_freq_scale


_ARCHITECTURES: dict[str, type[Architecture]] = {}


def register(cls: type[Architecture]) -> type[Architecture]:
    _ARCHITECTURES[cls.name] = cls
    return cls


def supported_architectures() -> list[str]:
    _load_builtin()
    return sorted(_ARCHITECTURES)


def architecture_class(metadata: dict[str, Any]) -> type[Architecture]:
    """The family class that ``general.architecture`` names; `UnsupportedModelError` lists the known ones.

    Checked before any ``{arch}.*`` key is read, so an unknown family is reported as such.
    """
    _load_builtin()
    name = metadata.get("general.architecture")
    cls = _ARCHITECTURES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnsupportedModelError(
            f"architecture {name!r} (general.architecture) is not supported; "
            f"realm runs: {', '.join(sorted(_ARCHITECTURES))}"
        )
    return cls


def _load_builtin() -> None:
    # importing the family modules registers them
    from realm.model import families  # noqa: F401
