"""``compile_step`` on the CPU: a recorded pass (realm.step_program) as one compiled call.

Each call is checked as its op method checks it, then encoded as an instruction of
step_kernel.run_step, which calls the same kernels with the same arguments. A run
swaps in the step's index arrays, checks their values as attention_paged would, and
makes one call into compiled code: a SmolLM2 decode step's ~270 ops cost one Python
call instead of ~270 (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import typed, types

from realm.backend import QuantTensor, RopeMode
from realm.errors import BackendArgumentError
from realm.op_checks import check_paged_indices, refuse_bad_id, refuse_bad_row, refuse_repeated_rows
from realm.step_program import STEP_OPS, OpCall
from realm_numba import step_kernel as sk
from realm_numba.backend import _NO_WEIGHT, CHECKS, refuse_shared_pools

_FLOATS = types.float32[::1]
_INTS = types.int32[:, ::1]
_WEIGHTS = types.Array(types.uint8, 2, "C", readonly=True)
_NO_FLOATS = np.zeros(0, np.float32)


class _Operands:
    """The arrays of a program, each in its list once, by identity."""

    def __init__(self, inputs: Sequence[np.ndarray], no_weight: np.ndarray) -> None:
        self.floats = typed.List.empty_list(_FLOATS)
        self.ints = typed.List.empty_list(_INTS)
        self.int_arrays: list[np.ndarray] = []  # the arrays behind ``ints``, as given
        self.weights = typed.List.empty_list(_WEIGHTS)
        self._index: dict[int, int] = {}
        self._keep: list[Any] = []  # the originals, so that no id is reused while the program lives
        for array in inputs:  # a copy of each, that a run copies its inputs into (`NumbaStepProgram.run`)
            self.int32(array, held=np.array(array, copy=True))
        self.no_weight = self.weight(no_weight)
        self.no_floats = self.float32(_NO_FLOATS)

    def _add(self, key: Any, lst: Any, value: np.ndarray) -> int:
        if id(key) not in self._index:
            self._index[id(key)] = len(lst)
            lst.append(value)
            self._keep.append(key)
        return self._index[id(key)]

    def float32(self, a: np.ndarray) -> int:
        if a.dtype != np.float32 or not a.flags.c_contiguous or not a.flags.writeable:
            raise BackendArgumentError(
                f"compile_step: every float array must be a writable C-contiguous "
                f"float32 array, got {a.dtype} {a.shape}"
            )
        return self._add(a, self.floats, a.reshape(-1))

    def int32(self, a: np.ndarray, held: np.ndarray | None = None) -> int:
        """``a``'s place in ``ints``; ``held``: the array to put there for it (else ``a``)."""
        if a.dtype != np.int32 or a.ndim not in (1, 2) or not a.flags.c_contiguous:
            raise BackendArgumentError(
                f"compile_step: index arrays must be C-contiguous int32 [n] or "
                f"[rows, cols], got {a.dtype} {a.shape}"
            )
        held = a if held is None else held
        at = self._add(a, self.ints, held.reshape(1, -1) if held.ndim == 1 else held)
        if at == len(self.int_arrays):
            self.int_arrays.append(held)
        return at

    def weight(self, blocks: np.ndarray) -> int:
        return self._add(blocks, self.weights, blocks)


def _compiled_entry(kernel: Any, arguments: tuple) -> Any:
    """``kernel``'s compiled function for ``arguments``' types, called without the dispatcher.

    The dispatcher works out the types of each call's arguments anew: for the three typed
    lists a call back into Python each. Right after a step's kernels have run, when little
    of the interpreter is still in the caches, that cost ~50 us a call against ~25 us for
    the compiled entry (an empty program, after reading 100 MB). The entry converts its
    arguments without checking their types, which is safe only because a program passes
    its own arrays and lists, of the types they had here, and an ``int`` thread count.
    """
    signature = tuple(kernel.typeof_pyval(a) for a in arguments)
    return kernel.compile(signature)  # compiled, or loaded from the cache, once per process


class NumbaStepProgram:
    """A compiled pass: `run` it with the step's index arrays (the recorded dtypes and shapes)."""

    def __init__(self, backend: Any, calls: Sequence[OpCall], inputs: Sequence[np.ndarray]) -> None:
        self._backend = backend
        self._n_inputs = len(inputs)
        self._shapes = [np.asarray(a).shape for a in inputs]
        self._ops = _Operands(inputs, _NO_WEIGHT)
        self._attention: set[tuple] = set()  # (table, block_size, n_slots, seq_ids, positions) indices
        self._tables: dict[int, Any] = {}  # instruction -> the table its get_rows reads, for a refusal
        code, params = [], []
        for call in calls:
            if call.op not in STEP_OPS:
                raise BackendArgumentError(f"compile_step: {call.op!r} is not a step op ({sorted(STEP_OPS)})")
            encoded = getattr(self, "_" + call.op)(*call.args, **call.kwargs)
            if call.op == "get_rows":
                self._tables[len(code)] = call.args[0]
            if encoded is not None:
                row, p = encoded
                code.append(row + [0] * (sk.FIELDS - len(row)))
                params.append(p + [0.0] * (2 - len(p)))
        # The paged indices are checked first, in the same call: once per run for all the
        # layers' attention calls that share them, before anything is written.
        checks = [[sk.CHECK_PAGED, *key] + [0] * (sk.FIELDS - 6) for key in sorted(self._attention)]
        self._tables = {at + len(checks): table for at, table in self._tables.items()}
        self._code = np.array(checks + code, dtype=np.int64).reshape(-1, sk.FIELDS)
        self._params = np.array([[0.0, 0.0]] * len(checks) + params, dtype=np.float64).reshape(-1, 2)
        has_quant = bool((self._code[:, 0] == sk.MATMUL_QUANT).any())
        # The arguments but the thread count, built once: the lists are changed in place.
        self._fixed = (self._code, self._params, self._ops.floats, self._ops.ints, self._ops.weights)
        self._kernel = _compiled_entry(sk.run_step_quant if has_quant else sk.run_step, self._arguments(0))

    def run(self, inputs: Sequence[np.ndarray]) -> None:
        """The recorded calls on these host index arrays; a 2-D one (the block table) may have any shape."""
        if len(inputs) != self._n_inputs:
            raise BackendArgumentError(f"compile_step program: {self._n_inputs} inputs, got {len(inputs)}")
        held = self._ops.int_arrays
        for i, (shape, now) in enumerate(zip(self._shapes, inputs, strict=True)):
            same = isinstance(now, np.ndarray) and (now.shape == shape or len(shape) == now.ndim == 2)
            if not same or now.dtype != np.int32 or not now.flags.c_contiguous:
                raise BackendArgumentError(
                    f"compile_step program: input {i} must be C-contiguous int32 of "
                    f"shape {shape}, got {getattr(now, 'dtype', type(now))} "
                    f"{getattr(now, 'shape', '')}"
                )
            # Into the program's own array: setting a typed list's item from Python costs
            # ~8 us, a copy ~1 us. A block table of another width takes the slow way.
            if now.shape == held[i].shape:
                np.copyto(held[i], now)
            else:
                held[i] = now.copy()
                self._ops.ints[i] = held[i].reshape(1, -1) if now.ndim == 1 else held[i]
        bad_at = self._kernel(*self._fixed, self._backend._threads())
        if bad_at >= 0:  # an op refused its indices and wrote nothing; the ops before it ran
            self._refuse(bad_at)

    def _arguments(self, threads: int) -> tuple:
        return (*self._fixed, threads)

    def _refuse(self, at: int) -> None:
        """Raise what instruction ``at``'s op method raises for the indices it refused."""
        row = self._code[at]
        answer = int(row[sk.REFUSED])
        row[sk.REFUSED] = 0
        held = self._ops.int_arrays
        if row[0] == sk.CHECK_PAGED:  # the op's own check says what is wrong
            table, block_size, n_slots, seq_ids, positions = (int(f) for f in row[1:6])
            check_paged_indices(held[table], block_size, n_slots, held[seq_ids], held[positions])
            raise BackendArgumentError("compile_step program: the step's paged indices are invalid")
        if row[0] in (sk.SET_ROWS, sk.ROPE_WRITE_KV):
            fused = row[0] == sk.ROPE_WRITE_KV
            op, n_rows, rows = ("rope_write_kv", row[16], row[17]) if fused else ("set_rows", row[5], row[6])
            if answer == -2:
                refuse_repeated_rows(op)
            refuse_bad_row(int(n_rows), int(held[rows].reshape(-1)[answer]), answer, op)
        table = self._tables[at]
        refuse_bad_id(table, table.shape[0], int(held[row[2]].reshape(-1)[answer]), answer)

    # ------------------------------------------------------------------ one encoder per op
    # Each checks its call as the op method does and returns (instruction, float params).

    def _f(self, a: np.ndarray) -> int:
        return self._ops.float32(a)

    def _get_rows(self, w, ids, out):
        CHECKS.get_rows(w, ids, out)
        n, d = out.shape
        if not isinstance(w, QuantTensor):
            table = self._f(np.ascontiguousarray(w))
            return [sk.TAKE_ROWS, table, self._ops.int32(ids), n, d, self._f(out)], []
        p = self._backend._prepare(w)
        blocks = self._ops.weight(_read_only(p.data))
        op = sk.GET_ROWS if p.rows is None else sk.TAKE_ROWS_BLOCKS
        return [op, blocks, self._ops.int32(ids), n, d, self._f(out), int(p.qtype)], []

    def _rms_norm(self, x, weight, eps, out):
        CHECKS.rms_norm(x, weight, out)
        d = x.shape[-1]
        return [sk.RMS_NORM, self._f(x), x.size // d, d, self._f(weight), self._f(out)], [eps]

    def _add(self, a, b, out):
        CHECKS.add(a, b, out)
        d = a.shape[-1] if a.ndim else 1
        return [sk.ADD, self._f(a), a.size // d, d, self._f(b), b.size // d, self._f(out)], []

    def _scale(self, x, s, out):
        CHECKS.scale(x, out)
        return [sk.SCALE, self._f(x), self._f(out)], [s]

    def _swiglu(self, gate, up, out):
        CHECKS.gated("swiglu", gate, up, out)
        return [sk.SWIGLU, self._f(gate), self._f(up), self._f(out)], []

    def _geglu(self, gate, up, out):
        CHECKS.gated("geglu", gate, up, out)
        return [sk.GEGLU, self._f(gate), self._f(up), self._f(out)], []

    def _rope(self, x, positions, n_rot, base, mode, out, freq_factors=None, freq_scale=1.0):
        CHECKS.rope(x, positions, n_rot, mode, out, freq_factors)
        n, heads, head_dim = x.shape
        ff = _NO_FLOATS if freq_factors is None else freq_factors
        neox = int(RopeMode(mode) == RopeMode.NEOX)
        return [
            sk.ROPE,
            self._f(x),
            n,
            heads,
            head_dim,
            self._ops.int32(positions),
            int(n_rot),
            neox,
            self._f(ff),
            int(freq_factors is not None),
            self._f(out),
        ], [base, freq_scale]

    def _count_nonfinite(self, x, out):
        CHECKS.count_nonfinite(x, out)
        return [sk.COUNT_NONFINITE, self._f(x), *x.shape, self._ops.int32(out)], []

    def _argmax_rows(self, x, out):
        CHECKS.argmax_rows(x, out)
        return [sk.ARGMAX_ROWS, self._f(x), *x.shape, self._ops.int32(out)], []

    def _set_rows(self, src, dst, rows):
        CHECKS.set_rows(src, dst, rows)
        if len(src) == 0:
            return None
        _refuse_shared("set_rows", src, dst)
        return [
            sk.SET_ROWS,
            self._f(src),
            len(src),
            src[0].nbytes,
            self._f(dst),
            len(dst),
            self._ops.int32(rows),
        ], []

    def _attention_paged(
        self,
        q,
        k_pool,
        v_pool,
        block_table,
        block_size,
        seq_ids,
        positions,
        scale,
        out,
        window=None,
        softcap=None,
    ):
        CHECKS.attention_paged(
            q, k_pool, v_pool, block_table, block_size, seq_ids, positions, out, window, softcap
        )
        if len(q) == 0:
            return None
        _refuse_shared("attention_paged", q, out)
        n, n_head, head_dim = q.shape
        slots, n_kv, _ = k_pool.shape
        table, seqs, pos = (self._ops.int32(a) for a in (block_table, seq_ids, positions))
        self._attention.add((table, int(block_size), slots, seqs, pos))
        return [
            sk.ATTENTION,
            self._f(q),
            n,
            n_head,
            head_dim,
            self._f(k_pool),
            slots,
            n_kv,
            self._f(v_pool),
            v_pool.shape[2],
            table,
            int(block_size),
            seqs,
            pos,
            int(window or 0),
            self._f(out),
        ], [scale, softcap or 0.0]

    def _matmul(self, x, w, out):
        CHECKS.matmul(x, w, out)
        _refuse_shared("matmul", x, out)
        (n, k), m = x.shape, w.shape[0]
        if not isinstance(w, QuantTensor):
            return [sk.MATMUL_F32, self._f(x), n, k, self._f(w), m, self._f(out)], []
        p = self._backend._prepare(w)
        blocks = self._ops.weight(_read_only(p.data))
        if p.rows is not None:
            return [sk.MATMUL_F32_BLOCKS, self._f(x), n, k, blocks, self._f(out)], []
        return [sk.MATMUL_QUANT, int(p.qtype), self._f(x), n, k, blocks, self._f(out), p.lanes], []

    def _matmul_q16(self, x, w, out):
        CHECKS.matmul_q16(x, w, out)
        return self._q16(x, [w], [out])

    def _matmuls_q16(self, x, ws, outs):
        CHECKS.matmuls_q16(x, ws, outs)
        return self._q16(x, ws, outs)

    def _rms_norm_matmuls_q16(self, x, weight, eps, ws, outs, gated=None):
        CHECKS.rms_norm_matmuls_q16(x, weight, ws, outs, gated)
        return self._q16(x, ws, outs, weight, eps, gated)

    def _q16(self, x, ws, outs, norm=None, eps=0.0, gated=None):
        for out in outs:
            _refuse_shared("matmul_q16", x, out)
        codes, kinds = self._backend._q16_plan(ws)
        row = [sk.MATMUL_Q16, self._f(x), *x.shape]
        for i in range(3):
            if i < len(ws):
                blocks = self._ops.weight(_read_only(self._backend._prepare(ws[i]).data))
                row += [int(codes[i]), int(kinds[i]), blocks, self._f(outs[i])]
            else:
                row += [0, 0, self._ops.no_weight, self._ops.no_floats]
        row.append(self._ops.no_floats if norm is None else self._f(norm))
        row.append(sk.GATED[gated])
        return row, [eps]

    def _rope_write_kv(self, q, k, v, positions, n_rot, base, mode, k_pool, v_pool, slots,
                       freq_factors=None, freq_scale=1.0):
        CHECKS.rope_write_kv(q, k, v, positions, n_rot, mode, k_pool, v_pool, slots, freq_factors)
        refuse_shared_pools("rope_write_kv", (q, k, v), (k_pool, v_pool))
        if len(q) == 0:
            return None
        n, n_head, head_dim = q.shape
        ff = _NO_FLOATS if freq_factors is None else freq_factors
        return [
            sk.ROPE_WRITE_KV,
            self._f(q),
            n,
            n_head,
            head_dim,
            self._f(k),
            k.shape[1],
            self._f(v),
            v.shape[2],
            self._ops.int32(positions),
            int(n_rot),
            int(RopeMode(mode) == RopeMode.NEOX),
            self._f(ff),
            int(freq_factors is not None),
            self._f(k_pool),
            self._f(v_pool),
            len(k_pool),
            self._ops.int32(slots),
        ], [base, freq_scale]


def _read_only(blocks: np.ndarray) -> np.ndarray:
    if not blocks.flags.writeable:
        return blocks
    view = blocks.view()
    view.flags.writeable = False  # the kernels' one type for weights
    return view


def _refuse_shared(op: str, a: np.ndarray, out: np.ndarray) -> None:
    if np.may_share_memory(a, out):
        raise BackendArgumentError(
            f"compile_step: {op}'s input and output share memory; a step program "
            "does not copy inputs (call the op directly)"
        )
