"""The paged key/value cache: one ``[slots, n_head_kv, head_dim]`` pair of buffers per layer.

Slot ``b * block_size + i`` holds position ``i`` of block ``b``; which block belongs to which
sequence is the `BlockPool`'s business (realm/engine/blocks.py). The buffers hold only the
pool's ``capacity`` blocks: a model's trained context can be large (gemma-3: 32768
positions), so they start small and grow as the pool hands out more blocks; memory follows
the positions in use, not ``n_seq x n_ctx``.
"""

from __future__ import annotations

import numpy as np

from realm.backend import Backend, DeviceArray
from realm.engine.blocks import DEFAULT_BLOCK_SIZE, BlockPool
from realm.model.config import ModelConfig

INITIAL_CAPACITY = 512  # positions


class KVCache:
    def __init__(
        self, backend: Backend, cfg: ModelConfig, n_positions: int, block_size: int = DEFAULT_BLOCK_SIZE
    ) -> None:
        self.backend = backend
        self.cfg = cfg
        self.block_size = block_size
        n_blocks = -(-n_positions // block_size)
        initial = min(n_blocks, max(1, -(-INITIAL_CAPACITY // block_size)))
        self.pool = BlockPool(n_blocks, block_size, capacity=initial)
        self.k: list[DeviceArray] = []
        self.v: list[DeviceArray] = []
        self.capacity = 0  # positions the buffers hold
        self.sync()

    def sync(self) -> None:
        """Grow the buffers to the pool's capacity, keeping what they hold (between passes only)."""
        capacity = self.pool.capacity * self.block_size
        if capacity <= self.capacity:
            return
        k_new = [self._alloc(capacity, self.cfg.head_dim_k) for _ in range(self.cfg.n_layer)]
        v_new = [self._alloc(capacity, self.cfg.head_dim_v) for _ in range(self.cfg.n_layer)]
        if self.capacity:
            for old, new in zip(self.k + self.v, k_new + v_new, strict=True):
                self.backend.copy_rows(old, new, 0)
        self.k, self.v, self.capacity = k_new, v_new, capacity

    def _alloc(self, capacity: int, head_dim: int) -> DeviceArray:
        return self.backend.empty((capacity, self.cfg.n_head_kv, head_dim), np.float32)

    def bytes_per_position(self) -> int:
        return self.cfg.n_layer * self.cfg.n_head_kv * (self.cfg.head_dim_k + self.cfg.head_dim_v) * 4

    def nbytes_allocated(self) -> int:
        return self.capacity * self.bytes_per_position()
