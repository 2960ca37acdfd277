"""A pass as a program: the backend calls of one step, described once and run many times.

A decode step is the same few hundred backend calls on the same buffers every time; only
the batch's indices (positions, sequences, block table, KV slots) change. Calling each op
from Python costs microseconds of checks and dispatch, which at decode sizes is as much
as the ops' own work. A backend that can run a list of calls in one go offers
``compile_step`` (`supports("compile_step")`): the model layer describes a pass once with
a `StepRecorder` standing in for the backend, hands the calls over, and from then on runs
the whole pass with one `StepProgram.run` (the numba backend: a compiled loop over the
calls; a CUDA backend: a graph).

The definition is `run_calls`: the same calls made one by one, with the step's inputs
put where the recorded ones were. A backend's program must give the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from realm.errors import CallOrderError

# The ops a step may contain: those that only write into device arrays they are given.
STEP_OPS = frozenset({
    "get_rows", "rms_norm", "rope", "add", "scale", "swiglu", "geglu", "set_rows",
    "attention_paged", "matmul", "matmul_q16", "matmuls_q16", "rms_norm_matmuls_q16", "rope_write_kv",
    "count_nonfinite", "argmax_rows",
})  # fmt: skip


@dataclass(frozen=True)
class OpCall:
    """One backend call of a step: ``getattr(backend, op)(*args, **kwargs)``."""

    op: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)


class StepProgram(Protocol):
    def run(self, inputs: Sequence[np.ndarray]) -> None:
        """Run the recorded calls with ``inputs``, host arrays, in place of the recorded inputs
        (same dtypes and shapes, but a 2-D one, the block table, may have any number of rows
        and columns: the sequences of a pass of ``n`` tokens and their blocks). The program
        copies them to where its calls read them: a decode step's indices are a few numbers,
        and a separate upload of each would cost more than the copy."""
        ...


class StepRecorder:
    """Stands in for a backend while a pass is described: each step op is noted, none runs.

    >>> rec = StepRecorder(backend)                  # doctest: +SKIP
    >>> rec.add(x, y, x)                             # doctest: +SKIP
    >>> rec.calls                                    # doctest: +SKIP
    [OpCall(op='add', args=(x, y, x), kwargs={})]
    """

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.calls: list[OpCall] = []

    def supports(self, op: str, qtype: Any = None) -> bool:
        return self._backend.supports(op, qtype)

    def __getattr__(self, name: str) -> Any:
        if name not in STEP_OPS:
            raise CallOrderError(f"{name!r} cannot be part of a recorded step (step ops: {sorted(STEP_OPS)})")

        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append(OpCall(name, args, kwargs))

        return record


def substitute(value: Any, swap: dict[int, Any]) -> Any:
    """``value``, or what replaces it in ``swap`` (keyed by ``id``); lists are looked into."""
    if isinstance(value, list):
        return [substitute(v, swap) for v in value]
    return swap.get(id(value), value)


def run_calls(backend: Any, calls: Sequence[OpCall], recorded: Sequence[Any],
              inputs: Sequence[np.ndarray]) -> None:
    """The definition of a program's run: each call on ``backend``, the host arrays ``inputs``
    uploaded in place of ``recorded``."""
    swap = {id(r): backend.upload(i) for r, i in zip(recorded, inputs, strict=True)}
    for call in calls:
        args = [substitute(a, swap) for a in call.args]
        kwargs = {k: substitute(v, swap) for k, v in call.kwargs.items()}
        getattr(backend, call.op)(*args, **kwargs)
