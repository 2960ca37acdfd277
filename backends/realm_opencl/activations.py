"""The activation ops of `OpenCLBackend`: norms, RoPE, attention (dense and paged), gated units,
add, scale, copies and the paged KV write.

Kept apart from weights and memory handling (backend.py) so each file has one subject; the
methods use the backend's ``runtime`` and ``queue``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realm.backend import RopeMode
from realm.op_checks import check_paged_indices, check_rows
from realm_opencl._cl import cl, cla
from realm_opencl.arrays import CHECKS, buf, check, next_pow2, round_up
from realm_opencl.runtime import PRELUDE

ATT_WG = 64  # attention.cl
NORM_WG = 64  # rows.cl
ELEMENTWISE_WG = 64


class ActivationOps:
    """Row-wise and attention ops; mixed into `OpenCLBackend`."""

    runtime: Any
    queue: Any
    _inv_freq: dict[tuple[int, float], cla.Array]

    def _rows_kernels(self) -> dict[str, Any]:
        from realm.kernels import rows_program

        return self.runtime.kernels("rows", lambda: rows_program(PRELUDE))

    def _elementwise(self, name: str, n: int, *args: Any) -> None:
        if n:
            self.runtime.launch(self._rows_kernels()[name], (round_up(n, ELEMENTWISE_WG),),
                                (ELEMENTWISE_WG,), *args)

    def rms_norm(self, x: cla.Array, weight: cla.Array, eps: float, out: cla.Array) -> None:
        """``out = x / sqrt(mean(x**2, last axis) + eps) * weight``."""
        CHECKS.rms_norm(x, weight, out)
        d = x.shape[-1]
        rows = x.size // d if d else 0
        if rows:
            self.runtime.launch(self._rows_kernels()["rms_norm"], (rows * NORM_WG,), (NORM_WG,),
                                *buf(x), *buf(weight), *buf(out), np.int32(d), np.float32(eps))

    def _inv_freq_table(self, n_rot: int, base: float) -> cla.Array:
        """``base ** (-2i / n_rot)`` computed exactly as the reference does, kept on the device."""
        key = (n_rot, float(base))
        table = self._inv_freq.get(key)
        if table is None:
            exponents = np.arange(0, n_rot, 2, dtype=np.float32) / np.float32(n_rot)
            host = (np.float32(base) ** -exponents).astype(np.float32)
            table = self._inv_freq[key] = cla.to_device(self.queue, host)
        return table

    def rope(self, x: cla.Array, positions: cla.Array, n_rot: int, base: float, mode: RopeMode,
             out: cla.Array, freq_factors: cla.Array | None = None, freq_scale: float = 1.0) -> None:
        """Rotate the first `n_rot` dims of every head; see `realm.backend` for the angles."""
        CHECKS.rope(x, positions, n_rot, mode, out, freq_factors)
        n, n_head, head_dim = x.shape
        inv_freq = self._inv_freq_table(n_rot, base)
        if n * n_head == 0:
            return
        in_place = out.base_data == x.base_data and out.offset == x.offset
        tail = 0 if in_place else head_dim - n_rot
        factors = freq_factors if freq_factors is not None else inv_freq
        self.runtime.launch(
            self._rows_kernels()["rope"], (n_rot // 2 + tail, n_head, n), None,
            *buf(x), *buf(positions), *buf(inv_freq), *buf(factors), *buf(out), np.int32(n_head),
            np.int32(head_dim), np.int32(n_rot), np.int32(RopeMode(mode) == RopeMode.NEOX),
            np.int32(freq_factors is not None), np.float32(freq_scale))

    def attention(self, q: cla.Array, k_cache: cla.Array, v_cache: cla.Array, n_past: int,
                  scale: float, out: cla.Array, window: int | None = None,
                  softcap: float | None = None) -> None:
        """Causal (optionally windowed, soft-capped) softmax attention with grouped KV heads."""
        CHECKS.attention(q, k_cache, v_cache, n_past, out, window, softcap)
        n, n_head, head_dim = q.shape
        n_kv_head = k_cache.shape[1]
        head_dim_v = v_cache.shape[2]
        if n * n_head == 0:
            return
        kernel = self._attention_kernels(max(head_dim, head_dim_v))["attention"]
        self.runtime.launch(
            kernel, (n_head * ATT_WG, n), (ATT_WG, 1), *buf(q), *buf(k_cache), *buf(v_cache),
            *buf(out), np.int32(n_head), np.int32(n_kv_head), np.int32(head_dim),
            np.int32(head_dim_v), np.int32(n_past), np.float32(scale), np.int32(window or 0),
            np.float32(softcap or 0.0))

    def _attention_kernels(self, head_dim: int) -> dict[str, Any]:
        """The attention program (dense and paged kernels) for head dims up to `head_dim`."""
        hd_max = max(next_pow2(head_dim), ATT_WG)

        def source() -> str:
            from realm.kernels import attention_program

            return attention_program(PRELUDE, hd_max)

        return self.runtime.kernels(f"attention:{hd_max}", source)

    def attention_paged(self, q: cla.Array, k_pool: cla.Array, v_pool: cla.Array,
                        block_table: cla.Array, block_size: int, seq_ids: cla.Array,
                        positions: cla.Array, scale: float, out: cla.Array,
                        window: int | None = None, softcap: float | None = None) -> None:
        """`attention` for tokens of many sequences, each reading its own blocks of the pools.

        Token ``i`` attends to positions ``0..positions[i]`` (within `window`) of sequence
        ``seq_ids[i]``, at slot ``block_table[s, p // block_size] * block_size + p % block_size``.
        One work-group per (head, token), so a token's bits do not depend on the batch.
        """
        CHECKS.attention_paged(q, k_pool, v_pool, block_table, block_size, seq_ids, positions,
                               out, window, softcap)
        # The indices are a few ints: checked on host copies, never clamped in the kernel.
        check_paged_indices(block_table.get(queue=self.queue), block_size, k_pool.shape[0],
                            seq_ids.get(queue=self.queue), positions.get(queue=self.queue))
        n, n_head, head_dim = q.shape
        n_kv_head = k_pool.shape[1]
        head_dim_v = v_pool.shape[2]
        if n * n_head == 0:
            return
        kernel = self._attention_kernels(max(head_dim, head_dim_v))["attention_paged"]
        self.runtime.launch(
            kernel, (n_head * ATT_WG, n), (ATT_WG, 1), *buf(q), *buf(k_pool), *buf(v_pool),
            *buf(block_table), *buf(seq_ids), *buf(positions), *buf(out), np.int32(n_head),
            np.int32(n_kv_head), np.int32(head_dim), np.int32(head_dim_v), np.int32(block_size),
            np.int32(block_table.shape[1]), np.float32(scale), np.int32(window or 0),
            np.float32(softcap or 0.0))

    def _gated(self, op: str, gate: cla.Array, up: cla.Array, out: cla.Array) -> None:
        CHECKS.gated(op, gate, up, out)
        self._elementwise(op, gate.size, *buf(gate), *buf(up), *buf(out), np.int32(gate.size))

    def swiglu(self, gate: cla.Array, up: cla.Array, out: cla.Array) -> None:
        """``out = silu(gate) * up``."""
        self._gated("swiglu", gate, up, out)

    def geglu(self, gate: cla.Array, up: cla.Array, out: cla.Array) -> None:
        """``out = gelu_tanh(gate) * up`` (ggml's tanh approximation of GELU)."""
        self._gated("geglu", gate, up, out)

    def add(self, a: cla.Array, b: cla.Array, out: cla.Array) -> None:
        """``out = a + b``; `b` has `a`'s shape or is one row ([d] or [1, d]) added to every row."""
        CHECKS.add(a, b, out)
        d = a.shape[-1] if a.ndim else 1
        b_len = a.size if tuple(b.shape) == tuple(a.shape) else d
        self._elementwise("add", a.size, *buf(a), *buf(b), *buf(out), np.int32(a.size),
                          np.int32(b_len))

    def scale(self, x: cla.Array, s: float, out: cla.Array) -> None:
        """``out = x * s``."""
        CHECKS.scale(x, out)
        self._elementwise("scale", x.size, *buf(x), *buf(out), np.int32(x.size), np.float32(s))

    def copy_rows(self, src: cla.Array, dst: cla.Array, start: int) -> None:
        """``dst[start:start+len(src)] = src`` (a KV-cache write), as one device copy."""
        CHECKS.copy_rows(src, dst, start)
        if src.nbytes == 0:
            return
        row_bytes = dst.nbytes // len(dst)
        dst_offset = dst.offset + start * row_bytes
        if src.base_data == dst.base_data:
            check(src.offset + src.nbytes <= dst_offset or dst_offset + src.nbytes <= src.offset,
                  "copy_rows: src and dst overlap in device memory")
        cl.enqueue_copy(self.queue, dst.base_data, src.base_data, byte_count=src.nbytes,
                        src_offset=src.offset, dst_offset=dst_offset)

    def set_rows(self, src: cla.Array, dst: cla.Array, rows: cla.Array) -> None:
        """``dst[rows[i]] = src[i]`` (a paged KV write: ``rows`` are the tokens' slots)."""
        CHECKS.set_rows(src, dst, rows)
        host_rows = rows.get(queue=self.queue)
        check_rows(len(dst), host_rows)
        width = src.size // len(src) if len(src) else 0
        if width == 0:
            return
        if src.base_data == dst.base_data:
            check(src.offset + src.nbytes <= dst.offset or dst.offset + dst.nbytes <= src.offset,
                  "set_rows: src and dst overlap in device memory")
        self.runtime.launch(self._rows_kernels()["set_rows"],
                            (round_up(width, ELEMENTWISE_WG), len(src)), (ELEMENTWISE_WG, 1),
                            *buf(src), *buf(rows), *buf(dst), np.int32(width))
