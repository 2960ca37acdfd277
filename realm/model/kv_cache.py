"""The key/value cache: one ``[capacity, n_head_kv, head_dim]`` pair of arrays per layer.

A model's trained context can be large (gemma-3: 32768 positions), so the cache starts small
and doubles when a sequence needs more, up to ``n_ctx``; memory follows what is used.
"""

from __future__ import annotations

import numpy as np

from realm.backend import Backend, DeviceArray
from realm.errors import ContextOverflowError
from realm.model.config import ModelConfig

INITIAL_CAPACITY = 512


class KVCache:
    def __init__(self, backend: Backend, cfg: ModelConfig, n_ctx: int) -> None:
        self.backend = backend
        self.cfg = cfg
        self.n_ctx = n_ctx
        self.n_filled = 0  # positions [0, n_filled) hold valid keys/values
        self.capacity = 0
        self.k: list[DeviceArray] = []
        self.v: list[DeviceArray] = []
        self._grow(min(n_ctx, INITIAL_CAPACITY))

    def _alloc(self, capacity: int, head_dim: int) -> DeviceArray:
        return self.backend.empty((capacity, self.cfg.n_head_kv, head_dim), np.float32)

    def _grow(self, capacity: int) -> None:
        k_new = [self._alloc(capacity, self.cfg.head_dim_k) for _ in range(self.cfg.n_layer)]
        v_new = [self._alloc(capacity, self.cfg.head_dim_v) for _ in range(self.cfg.n_layer)]
        if self.n_filled:
            for old, new in zip(self.k + self.v, k_new + v_new, strict=True):
                self.backend.copy_rows(old[: self.n_filled], new, 0)
        self.k, self.v, self.capacity = k_new, v_new, capacity

    def reserve(self, n_positions: int) -> None:
        """Make room for positions ``[0, n_positions)``."""
        if n_positions > self.n_ctx:
            raise ContextOverflowError(
                f"{n_positions} positions do not fit in the context of {self.n_ctx} tokens; "
                "shorten the input or load the model with a larger n_ctx"
            )
        if n_positions > self.capacity:
            self._grow(min(self.n_ctx, max(n_positions, 2 * self.capacity)))

    def nbytes_allocated(self) -> int:
        per_pos = self.cfg.n_head_kv * (self.cfg.head_dim_k + self.cfg.head_dim_v) * 4
        return self.capacity * per_pos * self.cfg.n_layer
