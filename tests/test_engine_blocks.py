"""The KV block pool: memory follows tokens, prefixes are shared, nothing in use is ever taken."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from realm.engine import BlockPool, PoolFullError
from realm.errors import InvalidParameterError, RealmError
from tests.fuzzing import FUZZ_SETTINGS

SYSTEM = list(range(100, 132))  # a 32-token system prompt: two full blocks of 16


def test_memory_follows_tokens_not_context():
    pool = BlockPool(n_blocks=64, block_size=16)
    tables = [pool.new_sequence(list(range(i, i + 20))) for i in range(8)]  # distinct prompts
    assert all(len(t.blocks) == 2 for t in tables)  # 20 tokens: 2 blocks, not n_ctx's worth
    assert pool.n_free == 64 - 16


def test_a_shared_system_prompt_is_stored_once():
    pool = BlockPool(n_blocks=64, block_size=16)
    first = pool.new_sequence(SYSTEM + [1, 2, 3])
    pool.commit(first, len(first.prompt))
    used_before = 64 - pool.n_free
    others = [pool.new_sequence(SYSTEM + [7, i]) for i in range(15)]
    for t in others:
        assert t.n_cached == 32 and t.blocks[:2] == first.blocks[:2]
    # each later request took one fresh block for its own tail, none for the system prompt
    assert 64 - pool.n_free == used_before + 15
    assert pool.ref_count[first.blocks[0]] == 16


def test_the_last_prompt_token_is_always_computed():
    pool = BlockPool(n_blocks=8, block_size=4)
    a = pool.new_sequence([1, 2, 3, 4, 5, 6, 7, 8])
    pool.commit(a, 8)
    b = pool.new_sequence([1, 2, 3, 4, 5, 6, 7, 8])  # fully cached, but its logits are needed
    assert b.n_cached == 4 and b.blocks[1] != a.blocks[1]


def test_freed_blocks_stay_cached_until_the_pool_needs_them():
    pool = BlockPool(n_blocks=4, block_size=4)
    a = pool.new_sequence([1, 2, 3, 4, 5])
    pool.commit(a, 5)
    first = a.blocks[0]
    pool.free(a)
    assert pool.n_free == 4
    b = pool.new_sequence([1, 2, 3, 4, 6])
    assert b.n_cached == 4 and b.blocks[0] == first
    pool.free(b)
    # three fresh blocks and then the cached one is recycled for new contents
    c = pool.new_sequence(list(range(50, 66)))
    assert len(c.blocks) == 4 and pool.n_free == 0
    pool.free(c)
    d = pool.new_sequence([1, 2, 3, 4, 9])
    assert d.n_cached == 0  # the old [1, 2, 3, 4] block now holds c's tokens


def test_a_full_pool_says_so_and_takes_nothing():
    pool = BlockPool(n_blocks=3, block_size=4)
    a = pool.new_sequence(list(range(8)))
    with pytest.raises(PoolFullError, match=r"free blocks.*wait for running requests") as err:
        pool.new_sequence(list(range(20, 30)))
    assert isinstance(err.value, RealmError)
    assert pool.n_free == 1 and len(a.blocks) == 2  # the running sequence kept its blocks
    with pytest.raises(PoolFullError):
        pool.reserve(a, 20)
    assert len(a.blocks) == 2


def test_cancel_frees_at_once():
    pool = BlockPool(n_blocks=16, block_size=4)
    a = pool.new_sequence(list(range(10)))
    pool.commit(a, 10)
    pool.reserve(a, 14)
    pool.commit(a, 14, [1, 2, 3, 4])
    assert pool.n_free == 12
    pool.free(a)
    assert pool.n_free == 16 and a.blocks == []
    pool.free(a)  # twice is harmless
    assert pool.n_free == 16


def test_bad_arguments():
    with pytest.raises(InvalidParameterError, match="n_blocks"):
        BlockPool(0)
    pool = BlockPool(4, 4)
    a = pool.new_sequence([1, 2, 3])
    with pytest.raises(InvalidParameterError, match="reserve"):
        pool.commit(a, 5, [1, 2, 3, 4, 5])


class PoolMachine(RuleBasedStateMachine):
    """Random new / grow / commit / free: the counts always add up, no block is in two places."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(n_blocks=12, block_size=4)
        self.live: list = []

    @rule(prompt=st.lists(st.integers(0, 3), min_size=1, max_size=14))
    def new(self, prompt):
        try:
            table = self.pool.new_sequence(prompt)
        except PoolFullError:
            return
        self.pool.commit(table, len(prompt))
        self.live.append(table)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), n=st.integers(1, 6))
    def grow(self, data, n):
        table = data.draw(st.sampled_from(self.live))
        try:
            self.pool.reserve(table, table.n_tokens + n)
        except PoolFullError:
            return
        self.pool.commit(table, table.n_tokens + n, [0] * n)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        table = data.draw(st.sampled_from(self.live))
        self.live.remove(table)
        self.pool.free(table)

    @invariant()
    def counts_add_up(self):
        refs = [0] * self.pool.n_blocks
        for t in self.live:
            for b in t.blocks:
                refs[b] += 1
        assert refs == self.pool.ref_count
        in_use = sum(1 for r in refs if r)
        assert in_use + self.pool.n_free == self.pool.n_blocks

    @invariant()
    def shared_blocks_hold_the_same_prefix(self):
        owner: dict[int, list[int]] = {}
        bs = self.pool.block_size
        for t in self.live:
            for i, b in enumerate(t.blocks[: t.n_tokens // bs]):
                prefix = t.tokens[: (i + 1) * bs]
                assert owner.setdefault(b, prefix) == prefix


PoolMachine.TestCase.settings = FUZZ_SETTINGS
test_pool_state_machine = PoolMachine.TestCase
