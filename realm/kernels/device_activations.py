"""The activation ops of `DeviceBackend`: norms, RoPE, attention (dense and paged), gated units,
add, scale, copies and the paged KV write, on any `DeviceRuntime`.

Kept apart from memory and weights (device_backend.py) so each file has one subject.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realm.backend import RopeMode
from realm.errors import BackendArgumentError
from realm.kernels import attention_program, rows_program
from realm.kernels.runtime import DeviceRuntime
from realm.op_checks import OpChecks, check_paged_indices, check_rows

ATT_WG = 64  # attention.cl
NORM_WG = 64  # rows.cl
ELEMENTWISE_WG = 64


def check(condition: bool, message: str) -> None:
    """Raise `BackendArgumentError` with `message` unless `condition`."""
    if not condition:
        raise BackendArgumentError(message)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` >= `n` (global sizes are whole work-groups)."""
    return -(-n // multiple) * multiple


def next_pow2(n: int) -> int:
    """The smallest power of two >= `n` (>= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


class ActivationOps:
    """Row-wise and attention ops; mixed into `OpenCLBackend`."""

    runtime: DeviceRuntime
    checks: OpChecks
    _inv_freq: dict[tuple[int, float], Any]

    def _rows_kernels(self) -> dict[str, Any]:
        prelude = self.runtime.prelude
        return self.runtime.kernels("rows", lambda: rows_program(prelude))

    def _elementwise(self, name: str, n: int, *args: Any) -> None:
        if n:
            self.runtime.launch(
                self._rows_kernels()[name], (round_up(n, ELEMENTWISE_WG),), (ELEMENTWISE_WG,), *args
            )

    def rms_norm(self, x: Any, weight: Any, eps: float, out: Any) -> None:
        """``out = x / sqrt(mean(x**2, last axis) + eps) * weight``."""
        self.checks.rms_norm(x, weight, out)
        d = x.shape[-1]
        rows = x.size // d if d else 0
        if rows:
            self.runtime.launch(
                self._rows_kernels()["rms_norm"],
                (rows * NORM_WG,),
                (NORM_WG,),
                *self._buf(x),
                *self._buf(weight),
                *self._buf(out),
                np.int32(d),
                np.float32(eps),
            )

    def _inv_freq_table(self, n_rot: int, base: float) -> Any:
        """``base ** (-2i / n_rot)`` computed exactly as the reference does, kept on the device."""
        key = (n_rot, float(base))
        table = self._inv_freq.get(key)
        if table is None:
            exponents = np.arange(0, n_rot, 2, dtype=np.float32) / np.float32(n_rot)
            host = (np.float32(base) ** -exponents).astype(np.float32)
            table = self._inv_freq[key] = self.runtime.to_device(host)
        return table

    def rope(
        self,
        x: Any,
        positions: Any,
        n_rot: int,
        base: float,
        mode: RopeMode,
        out: Any,
        freq_factors: Any | None = None,
        freq_scale: float = 1.0,
    ) -> None:
        """Rotate the first `n_rot` dims of every head; see `realm.backend` for the angles."""
        self.checks.rope(x, positions, n_rot, mode, out, freq_factors)
        n, n_head, head_dim = x.shape
        inv_freq = self._inv_freq_table(n_rot, base)
        if n * n_head == 0:
            return
        in_place = self.runtime.memory(out) == self.runtime.memory(x)
        tail = 0 if in_place else head_dim - n_rot
        factors = freq_factors if freq_factors is not None else inv_freq
        self.runtime.launch(
            self._rows_kernels()["rope"],
            (n_rot // 2 + tail, n_head, n),
            None,
            *self._buf(x),
            *self._buf(positions),
            *self._buf(inv_freq),
            *self._buf(factors),
            *self._buf(out),
            np.int32(n_head),
            np.int32(head_dim),
            np.int32(n_rot),
            np.int32(RopeMode(mode) == RopeMode.NEOX),
            np.int32(freq_factors is not None),
            np.float32(freq_scale),
        )

    def attention(
        self,
        q: Any,
        k_cache: Any,
        v_cache: Any,
        n_past: int,
        scale: float,
        out: Any,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None:
        """Causal (optionally windowed, soft-capped) softmax attention with grouped KV heads."""
        self.checks.attention(q, k_cache, v_cache, n_past, out, window, softcap)
        n, n_head, head_dim = q.shape
        n_kv_head = k_cache.shape[1]
        head_dim_v = v_cache.shape[2]
        if n * n_head == 0:
            return
        kernel = self._attention_kernels(max(head_dim, head_dim_v))["attention"]
        self.runtime.launch(
            kernel,
            (n_head * ATT_WG, n),
            (ATT_WG, 1),
            *self._buf(q),
            *self._buf(k_cache),
            *self._buf(v_cache),
            *self._buf(out),
            np.int32(n_head),
            np.int32(n_kv_head),
            np.int32(head_dim),
            np.int32(head_dim_v),
            np.int32(n_past),
            np.float32(scale),
            np.int32(window or 0),
            np.float32(softcap or 0.0),
        )

    def _attention_kernels(self, head_dim: int) -> dict[str, Any]:
        """The attention program (dense and paged kernels) for head dims up to `head_dim`."""
        hd_max = max(next_pow2(head_dim), ATT_WG)

        prelude = self.runtime.prelude
        return self.runtime.kernels(f"attention:{hd_max}", lambda: attention_program(prelude, hd_max))

    def attention_paged(
        self,
        q: Any,
        k_pool: Any,
        v_pool: Any,
        block_table: Any,
        block_size: int,
        seq_ids: Any,
        positions: Any,
        scale: float,
        out: Any,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None:
        """`attention` for tokens of many sequences, each reading its own blocks of the pools.

        Token ``i`` attends to positions ``0..positions[i]`` (within `window`) of sequence
        ``seq_ids[i]``, at slot ``block_table[s, p // block_size] * block_size + p % block_size``.
        One work-group per (head, token), so a token's bits do not depend on the batch.
        """
        self.checks.attention_paged(
            q, k_pool, v_pool, block_table, block_size, seq_ids, positions, out, window, softcap
        )
        # The indices are a few ints: checked on host copies, never clamped in the kernel.
        to_host = self.runtime.to_host
        check_paged_indices(
            to_host(block_table), block_size, k_pool.shape[0], to_host(seq_ids), to_host(positions)
        )
        n, n_head, head_dim = q.shape
        n_kv_head = k_pool.shape[1]
        head_dim_v = v_pool.shape[2]
        if n * n_head == 0:
            return
        kernel = self._attention_kernels(max(head_dim, head_dim_v))["attention_paged"]
        self.runtime.launch(
            kernel,
            (n_head * ATT_WG, n),
            (ATT_WG, 1),
            *self._buf(q),
            *self._buf(k_pool),
            *self._buf(v_pool),
            *self._buf(block_table),
            *self._buf(seq_ids),
            *self._buf(positions),
            *self._buf(out),
            np.int32(n_head),
            np.int32(n_kv_head),
            np.int32(head_dim),
            np.int32(head_dim_v),
            np.int32(block_size),
            np.int32(block_table.shape[1]),
            np.float32(scale),
            np.int32(window or 0),
            np.float32(softcap or 0.0),
        )

    def _gated(self, op: str, gate: Any, up: Any, out: Any) -> None:
        self.checks.gated(op, gate, up, out)
        self._elementwise(
            op, gate.size, *self._buf(gate), *self._buf(up), *self._buf(out), np.int32(gate.size)
        )

    def swiglu(self, gate: Any, up: Any, out: Any) -> None:
        """``out = silu(gate) * up``."""
        self._gated("swiglu", gate, up, out)

    def geglu(self, gate: Any, up: Any, out: Any) -> None:
        """``out = gelu_tanh(gate) * up`` (ggml's tanh approximation of GELU)."""
        self._gated("geglu", gate, up, out)

    def add(self, a: Any, b: Any, out: Any) -> None:
        """``out = a + b``; `b` has `a`'s shape or is one row ([d] or [1, d]) added to every row."""
        self.checks.add(a, b, out)
        d = a.shape[-1] if a.ndim else 1
        b_len = a.size if tuple(b.shape) == tuple(a.shape) else d
        self._elementwise(
            "add", a.size, *self._buf(a), *self._buf(b), *self._buf(out), np.int32(a.size), np.int32(b_len)
        )

    def scale(self, x: Any, s: float, out: Any) -> None:
        """``out = x * s``."""
        self.checks.scale(x, out)
        self._elementwise("scale", x.size, *self._buf(x), *self._buf(out), np.int32(x.size), np.float32(s))

    def count_nonfinite(self, x: Any, out: Any) -> None:
        """``out[r]`` = how many values of row ``r`` are NaN, +inf or -inf."""
        self.checks.count_nonfinite(x, out)
        self._row_reduction("count_nonfinite", x, out)

    def argmax_rows(self, x: Any, out: Any) -> None:
        """``out[r]`` = ``np.argmax(x[r])``: the first maximum of the row (its first NaN if any)."""
        self.checks.argmax_rows(x, out)
        self._row_reduction("argmax_rows", x, out)

    def _row_reduction(self, name: str, x: Any, out: Any) -> None:
        """One work-group per row of ``x [rows, d]`` (rows.cl), one int32 result per row."""
        rows, d = x.shape
        if rows:
            self.runtime.launch(
                self._rows_kernels()[name], (rows * NORM_WG,), (NORM_WG,), *self._buf(x), *self._buf(out),
                np.int32(d),
            )

    def copy_rows(self, src: Any, dst: Any, start: int) -> None:
        """``dst[start:start+len(src)] = src`` (a KV-cache write), as one device copy."""
        self.checks.copy_rows(src, dst, start)
        if src.nbytes == 0:
            return
        dst_offset = start * (dst.nbytes // len(dst))
        self._check_apart("copy_rows", src, src.nbytes, dst, dst_offset, src.nbytes)
        self.runtime.copy_bytes(src, dst, dst_offset)

    def set_rows(self, src: Any, dst: Any, rows: Any) -> None:
        """``dst[rows[i]] = src[i]`` (a paged KV write: ``rows`` are the tokens' slots)."""
        self.checks.set_rows(src, dst, rows)
        check_rows(len(dst), self.runtime.to_host(rows))
        width = src.size // len(src) if len(src) else 0
        if width == 0:
            return
        self._check_apart("set_rows", src, src.nbytes, dst, 0, dst.nbytes)
        self.runtime.launch(
            self._rows_kernels()["set_rows"],
            (round_up(width, ELEMENTWISE_WG), len(src)),
            (ELEMENTWISE_WG, 1),
            *self._buf(src),
            *self._buf(rows),
            *self._buf(dst),
            np.int32(width),
        )

    def _buf(self, x: Any) -> tuple[Any, np.int64]:
        return self.runtime.buffer(x)

    def _check_apart(
        self, op: str, src: Any, src_bytes: int, dst: Any, dst_start: int, dst_bytes: int
    ) -> None:
        """Refuse a write whose source overlaps the destination bytes it writes."""
        src_mem, src_at = self.runtime.memory(src)
        dst_mem, dst_at = self.runtime.memory(dst)
        dst_at += dst_start
        if src_mem == dst_mem:
            check(
                src_at + src_bytes <= dst_at or dst_at + dst_bytes <= src_at,
                f"{op}: src and dst overlap in device memory",
            )
