"""The paged KV cache's bookkeeping: fixed-size blocks of positions from one pool per model.

A sequence's keys and values live in a *block table*: position ``p`` of the sequence is slot
``p % block_size`` of physical block ``table[p // block_size]``. Memory then follows the
tokens in use (at most one partly filled block per sequence), not ``n_seq x n_ctx``.

Prefix sharing (vLLM's automatic prefix caching): a block is *full* once all its positions are
written, and a full block never changes again (sequences only append), so it can be shared
without copy-on-write. Each full block is known by the hash of its tokens chained to the hash
of the block before it, i.e. by the whole prefix up to its end. A new sequence whose prompt
starts with a known prefix takes those blocks (one more reference each) and computes only
the rest: a system prompt used by 100 requests is computed and stored once.

A block whose last reference goes away keeps its contents and its hash while it waits in a
least-recently-freed queue: a later prompt with the same prefix takes it back. Only when no
never-used block is left is the oldest such cached block handed out again, for new contents.
A block that a sequence references is never taken from it: when the pool has no block left
to give, `PoolFullError` says so and the caller queues or refuses the request.

This module holds no device memory; the engine maps block ids to rows of the backend's KV
buffers.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from realm.arguments import check_int
from realm.errors import InvalidParameterError, PoolFullError

__all__ = ["DEFAULT_BLOCK_SIZE", "BlockPool", "BlockTable", "PoolFullError"]

# vLLM's default; a block of 16 positions wastes at most 15 per sequence.
DEFAULT_BLOCK_SIZE = 16

_NO_PARENT = 0  # the chain hash "before" a sequence's first block


@dataclass(eq=False)
class BlockTable:
    """One sequence's blocks, in order, and how many positions of them are written."""

    prompt: list[int]
    blocks: list[int] = field(default_factory=list)
    n_tokens: int = 0  # positions [0, n_tokens) hold keys and values
    n_cached: int = 0  # of those, the leading prompt positions found in the cache at the start
    hashes: list[int] = field(default_factory=list)  # chain hash of each full block, in order
    tokens: list[int] = field(default_factory=list)  # the token ids at positions [0, n_tokens)
    # False for keys/values that may not follow from the tokens alone (a research hook replaced
    # an intermediate): such blocks are neither taken from the cache nor offered to it.
    shareable: bool = True


class BlockPool:
    """``n_blocks`` blocks of ``block_size`` positions, shared by every sequence of a model.

    Only the first ``capacity`` blocks have memory behind them. The pool hands out the lowest
    free block id first and, before it would go past ``capacity``, takes back the least
    recently freed cached block; only when neither is left does ``capacity`` grow (by at most
    1/16, so the KV memory stays within a few percent of the positions in use). The KV cache
    follows ``capacity`` with its buffers.

    >>> pool = BlockPool(n_blocks=8, block_size=4)
    >>> a = pool.new_sequence([1, 2, 3, 4, 5, 6])      # 6 prompt tokens: 2 blocks
    >>> a.n_cached                                      # nothing was computed before
    0
    >>> pool.commit(a, 6)                               # the engine wrote their keys/values
    >>> b = pool.new_sequence([1, 2, 3, 4, 9])          # shares the full block [1, 2, 3, 4]
    >>> b.n_cached, b.blocks[0] == a.blocks[0], pool.n_free
    (4, True, 5)
    """

    def __init__(
        self, n_blocks: int, block_size: int = DEFAULT_BLOCK_SIZE, capacity: int | None = None
    ) -> None:
        n_blocks = check_int("n_blocks", n_blocks, minimum=1)
        block_size = check_int("block_size", block_size, minimum=1)
        capacity = check_int("capacity", capacity, minimum=1, maximum=n_blocks, allow_none=True)
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.capacity = n_blocks if capacity is None else capacity
        self.ref_count = [0] * n_blocks
        self.n_allocations = 0  # blocks handed out for new contents, ever (shared ones count once)
        self._never_used = list(range(n_blocks))  # a heap: the lowest id is handed out first
        # free blocks that still hold a full block's keys/values, oldest first: hash -> block
        self._cached_free: OrderedDict[int, int] = OrderedDict()
        self._by_hash: dict[int, int] = {}  # chain hash -> block, for every full block with contents
        self._hash_of: dict[int, int] = {}  # block -> its chain hash, for the same blocks

    # ------------------------------------------------------------------ counts

    @property
    def n_free(self) -> int:
        """Blocks that a new sequence can take (never used, or cached and unreferenced)."""
        return len(self._never_used) + len(self._cached_free)

    def blocks_needed(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    # ------------------------------------------------------------------ sequences

    def new_sequence(self, prompt: Sequence[int], share: bool = True) -> BlockTable:
        """A table with room for ``prompt``, reusing the blocks of its longest cached prefix.

        At least the prompt's last token is always left to compute (its logits are needed), so
        a prompt made only of cached full blocks recomputes its last block into a fresh one.
        ``share=False`` neither reuses cached blocks nor offers this sequence's to later ones.
        Raises `PoolFullError` (taking nothing) when the pool cannot hold the rest.
        """
        prompt = list(prompt)
        table = BlockTable(prompt, shareable=share)
        reused: list[int] = []
        for h in self.prompt_hashes(prompt) if share else []:
            block = self._by_hash.get(h)
            if block is None:
                break
            reused.append(block)
            table.hashes.append(h)
        bs = self.block_size
        fresh = self.blocks_needed(len(prompt)) - len(reused)
        revivable = sum(1 for b in reused if self.ref_count[b] == 0)
        if fresh > self.n_free - revivable:
            raise PoolFullError(
                f"the KV pool has {self.n_free - revivable} free blocks of {bs} positions and this "
                f"prompt of {len(prompt)} tokens needs {fresh} more; wait for running requests to "
                f"finish, or make the pool larger (it has {self.n_blocks} blocks)"
            )
        for block in reused:
            self._take(block)
        table.blocks = reused + [self._allocate() for _ in range(fresh)]
        table.n_tokens = table.n_cached = len(reused) * bs
        table.tokens = prompt[: table.n_tokens]
        return table

    def prompt_hashes(self, prompt: Sequence[int]) -> list[int]:
        """Chain hashes of the full blocks of ``prompt`` that a new sequence could take from the cache.

        The block holding the prompt's last token is left out: that token is always computed.
        """
        hashes: list[int] = []
        parent = _NO_PARENT
        bs = self.block_size
        for start in range(0, len(prompt) - 1 - (len(prompt) - 1) % bs, bs):
            parent = _chain_hash(parent, prompt[start : start + bs])
            hashes.append(parent)
        return hashes

    def n_cached_blocks(self, hashes: Sequence[int]) -> int:
        """How many of ``hashes``, from the first, the cache holds."""
        n = 0
        while n < len(hashes) and hashes[n] in self._by_hash:
            n += 1
        return n

    def reserve(self, table: BlockTable, n_tokens: int) -> None:
        """Make room for positions ``[0, n_tokens)``; `PoolFullError` when the pool cannot."""
        need = self.blocks_needed(n_tokens) - len(table.blocks)
        if need <= 0:
            return  # most decode steps: the last block has room
        if need > self.n_free:
            raise PoolFullError(
                f"the KV pool has {self.n_free} free blocks and a sequence needs {need} more; "
                "wait for running requests to finish, or make the pool larger "
                f"(it has {self.n_blocks} blocks of {self.block_size} positions)"
            )
        table.blocks.extend(self._allocate() for _ in range(need))

    def commit(self, table: BlockTable, n_tokens: int, tokens: Sequence[int] | None = None) -> None:
        """Record that positions up to ``n_tokens`` now hold keys/values of ``tokens``.

        ``tokens`` are the ids written since the last commit; they default to the next ones of
        the table's prompt. Blocks that became full get their chain hash, so later prompts with
        the same prefix can share them.
        """
        if tokens is None:
            tokens = table.prompt[table.n_tokens : n_tokens]
        written = len(table.tokens) + len(tokens)
        if written != n_tokens or n_tokens > len(table.blocks) * self.block_size:
            raise InvalidParameterError(
                f"n_tokens={n_tokens} does not match the {written} tokens recorded, or passes the "
                f"table's {len(table.blocks)} blocks; reserve() before writing"
            )
        table.tokens.extend(tokens)
        table.n_tokens = n_tokens
        bs = self.block_size
        while len(table.hashes) < n_tokens // bs:
            i = len(table.hashes)
            parent = table.hashes[-1] if table.hashes else _NO_PARENT
            h = _chain_hash(parent, table.tokens[i * bs : (i + 1) * bs])
            table.hashes.append(h)
            block = table.blocks[i]
            if table.shareable and h not in self._by_hash and block not in self._hash_of:
                self._by_hash[h] = block
                self._hash_of[block] = h

    def truncate(self, table: BlockTable, n_keep: int) -> None:
        """Forget positions ``n_keep..`` of an unshared sequence (a research pass rewinding)."""
        if table.shareable or not 0 <= n_keep <= table.n_tokens:
            raise InvalidParameterError(
                f"truncate needs an unshared table and 0 <= n_keep <= {table.n_tokens}, got {n_keep}"
            )
        del table.tokens[n_keep:], table.hashes[n_keep // self.block_size :]
        table.n_tokens = n_keep

    def free(self, table: BlockTable) -> None:
        """Give a finished or cancelled sequence's blocks back; full ones stay cached for reuse."""
        for block in table.blocks:
            self.ref_count[block] -= 1
            if self.ref_count[block] == 0:
                h = self._hash_of.get(block)
                if h is None:
                    heapq.heappush(self._never_used, block)  # nothing worth keeping: reuse it first
                else:
                    self._cached_free[h] = block
        table.blocks = []
        table.n_tokens = 0

    # ------------------------------------------------------------------ blocks

    def _take(self, block: int) -> None:
        if self.ref_count[block] == 0:
            del self._cached_free[self._hash_of[block]]
        self.ref_count[block] += 1

    def _allocate(self) -> int:
        if self._never_used and self._never_used[0] < self.capacity:
            block = heapq.heappop(self._never_used)
        elif self._cached_free:
            h, block = self._cached_free.popitem(last=False)  # the least recently freed
            del self._by_hash[h], self._hash_of[block]
        elif self._never_used:
            block = heapq.heappop(self._never_used)
            self.capacity = min(self.n_blocks, max(block + 1, self.capacity + max(4, self.capacity // 16)))
        else:  # callers check n_free first
            raise PoolFullError(f"the KV pool's {self.n_blocks} blocks are all in use")
        self.ref_count[block] = 1
        self.n_allocations += 1
        return block


def _chain_hash(parent: int, tokens: Sequence[int]) -> int:
    # Python's tuple hash: fast, and with 64 bits a collision between two prefixes of one
    # model's workload is vanishingly unlikely (vLLM uses the same scheme by default).
    return hash((parent, tuple(tokens)))
