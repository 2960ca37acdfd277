"""What one forward pass works on: its batch of tokens, their indices, the activation buffers.

`Batch` is what a caller (the engine, or the research API for its one sequence) asks a pass
to run; `Pass` is the pass in progress, with the batch's indices on the host and the
device; `RunState` holds the activation buffers every pass reuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from realm.backend import Backend, DeviceArray
from realm.engine.blocks import BlockTable
from realm.model.config import ModelConfig

LOGITS_BUFFER_BYTES = 16 * 1024 * 1024  # bounds the rows of logits computed at once


def finite_rows(x: np.ndarray) -> np.ndarray:
    """Whether each row of ``x`` is free of NaN and infinities: one dot product over all of
    it (a NaN or an infinity makes it non-finite), row by row only when that overflowed."""
    flat = x.reshape(-1)
    with np.errstate(over="ignore"):  # an overflow is an answer here: the exact test follows
        square = np.dot(flat, flat)
    if np.isfinite(square):
        return np.ones(len(x), bool)
    return np.isfinite(x).all(axis=1)


@dataclass
class Batch:
    """The tokens of one pass: any mix of sequences, each token at its own position.

    Token ``i`` is position ``positions[i]`` of sequence ``tables[seq_ids[i]]``; the tables
    already have blocks for every position written. Tokens may come in any order (keys and
    values are all written before attention reads them, and each token sees only its own
    sequence up to its position); the pass returns logits for the last ``n_logits`` tokens.
    """

    ids: list[int]
    positions: np.ndarray  # int32 [n]
    seq_ids: np.ndarray  # int32 [n]
    tables: list[BlockTable]
    n_logits: int

    @classmethod
    def one_sequence(cls, table: BlockTable, ids: list[int], n_logits: int) -> Batch:
        """``ids`` following the positions ``table`` already holds."""
        n_past = table.n_tokens
        positions = np.arange(n_past, n_past + len(ids), dtype=np.int32)
        return cls(ids, positions, np.zeros(len(ids), np.int32), [table], n_logits)


class PassIndices(NamedTuple):
    """A pass's indices, int32, on the host or the device, in the order a recorded pass takes
    them (`StepProgram.run`)."""

    positions: DeviceArray  # [n]
    seq_ids: DeviceArray  # [n]
    block_table: DeviceArray  # [sequences, blocks]
    slots: DeviceArray  # [n]: the pool slot each token's key/value goes to
    ids: DeviceArray  # [n]: the token ids


class Pass:
    """The pass in progress: its batch, and the batch's indices on the host and the device.

    The indices are uploaded at their first use: a pass run by a program already recorded
    takes the host arrays (`StepProgram.run` copies them) and uploads none.
    """

    def __init__(self, batch: Batch, host: PassIndices, backend: Backend) -> None:
        self.batch = batch
        self.host = host
        self._backend = backend
        self._device: PassIndices | None = None

    @property
    def device(self) -> PassIndices:
        """The indices on the device: what the ops take, and a recorded pass's inputs."""
        if self._device is None:
            self._device = PassIndices(*(self._backend.upload(a) for a in self.host))
        return self._device

    @property
    def n(self) -> int:
        return len(self.batch.ids)


@dataclass
class RunState:
    """Activation buffers for up to ``n_batch`` tokens at once (llama2.c's RunState)."""

    x: DeviceArray  # residual stream [n_batch, n_embd]
    xn: DeviceArray  # normed input of the current sub-block [n_batch, n_embd]
    q: DeviceArray  # [n_batch, n_head * head_dim_k]
    k: DeviceArray  # [n_batch, n_head_kv * head_dim_k]
    v: DeviceArray  # [n_batch, n_head_kv * head_dim_v]
    attn: DeviceArray  # attention result before the output projection [n_batch, n_head * head_dim_v]
    proj: DeviceArray  # output of attn_output / ffn_down [n_batch, n_embd]
    gate: DeviceArray  # [n_batch, n_ff]
    up: DeviceArray  # [n_batch, n_ff]
    logits: DeviceArray  # [n_logit_rows, n_vocab]
    nonfinite: DeviceArray  # int32 [n_logit_rows]: NaN and infinities in each row of logits
    picks: DeviceArray  # int32 [n_logit_rows]: each row's argmax, for greedy sampling

    @classmethod
    def allocate(cls, backend: Backend, cfg: ModelConfig, n_batch: int) -> RunState:
        n_logit_rows = max(1, min(n_batch, LOGITS_BUFFER_BYTES // (4 * cfg.n_vocab)))

        def buf(*shape: int) -> DeviceArray:
            return backend.empty(shape, np.float32)

        return cls(
            x=buf(n_batch, cfg.n_embd),
            xn=buf(n_batch, cfg.n_embd),
            q=buf(n_batch, cfg.n_head * cfg.head_dim_k),
            k=buf(n_batch, cfg.n_head_kv * cfg.head_dim_k),
            v=buf(n_batch, cfg.n_head_kv * cfg.head_dim_v),
            attn=buf(n_batch, cfg.n_head * cfg.head_dim_v),
            proj=buf(n_batch, cfg.n_embd),
            gate=buf(n_batch, cfg.n_ff),
            up=buf(n_batch, cfg.n_ff),
            logits=buf(n_logit_rows, cfg.n_vocab),
            nonfinite=backend.empty((n_logit_rows,), np.int32),
            picks=backend.empty((n_logit_rows,), np.int32),
        )
