"""Many sequences at once: the paged KV cache's block pool (more of the engine to come)."""

from realm.engine.blocks import DEFAULT_BLOCK_SIZE, BlockPool, BlockTable, PoolFullError

__all__ = ["DEFAULT_BLOCK_SIZE", "BlockPool", "BlockTable", "PoolFullError"]
