"""The activation ops of `OpenCLBackend`: norms, RoPE, attention, gated units, add, scale, copies.

Kept apart from weights and memory handling (backend.py) so each file has one subject; the
methods use the backend's ``runtime`` and ``queue``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realm.backend import RopeMode
from realm_opencl._cl import cl, cla
from realm_opencl.arrays import buf, check, check_array, next_pow2, round_up
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
        check_array("x", x)
        check(x.ndim >= 1, "rms_norm x needs at least one axis")
        d = x.shape[-1]
        check_array("weight", weight, shape=(d,))
        check_array("out", out, shape=x.shape)
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
        check_array("x", x)
        check(x.ndim == 3, f"rope x must be [n, heads, head_dim], got shape {x.shape}")
        check_array("out", out, shape=x.shape)
        n, n_head, head_dim = x.shape
        check_array("positions", positions, dtype=np.int32, shape=(n,))
        check(n_rot % 2 == 0 and 0 < n_rot <= head_dim,
              f"rope n_rot must be even and in 1..{head_dim}, got {n_rot}")
        inv_freq = self._inv_freq_table(n_rot, base)
        if freq_factors is not None:
            check_array("freq_factors", freq_factors, shape=(n_rot // 2,))
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
        for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
            check_array(name, t)
            check(t.ndim == 3, f"attention {name} must be 3-D, got shape {t.shape}")
        n, n_head, head_dim = q.shape
        ctx, n_kv_head, _ = k_cache.shape
        head_dim_v = v_cache.shape[2]
        check(k_cache.shape[2] == head_dim, f"k_cache head_dim {k_cache.shape[2]} != q's {head_dim}")
        check(v_cache.shape[:2] == (ctx, n_kv_head),
              f"v_cache shape {v_cache.shape} does not match k_cache {k_cache.shape}")
        check(n_kv_head > 0 and n_head % n_kv_head == 0,
              f"{n_head} query heads do not group over {n_kv_head} kv heads")
        check(n_past >= 0 and n_past + n <= ctx, f"n_past {n_past} + n {n} exceeds the cache's {ctx} rows")
        check(window is None or window >= 1, f"attention window must be >= 1, got {window}")
        check(softcap is None or softcap > 0, f"attention softcap must be > 0, got {softcap}")
        check_array("out", out, shape=(n, n_head, head_dim_v))
        if n * n_head == 0:
            return
        hd_max = max(next_pow2(max(head_dim, head_dim_v)), ATT_WG)

        def source() -> str:
            from realm.kernels import attention_program

            return attention_program(PRELUDE, hd_max)

        kernel = self.runtime.kernels(f"attention:{hd_max}", source)["attention"]
        self.runtime.launch(
            kernel, (n_head * ATT_WG, n), (ATT_WG, 1), *buf(q), *buf(k_cache), *buf(v_cache),
            *buf(out), np.int32(n_head), np.int32(n_kv_head), np.int32(head_dim),
            np.int32(head_dim_v), np.int32(n_past), np.float32(scale), np.int32(window or 0),
            np.float32(softcap or 0.0))

    def _gated(self, op: str, gate: cla.Array, up: cla.Array, out: cla.Array) -> None:
        check_array("gate", gate)
        check_array("up", up, shape=gate.shape)
        check_array("out", out, shape=gate.shape)
        self._elementwise(op, gate.size, *buf(gate), *buf(up), *buf(out), np.int32(gate.size))

    def swiglu(self, gate: cla.Array, up: cla.Array, out: cla.Array) -> None:
        """``out = silu(gate) * up``."""
        self._gated("swiglu", gate, up, out)

    def geglu(self, gate: cla.Array, up: cla.Array, out: cla.Array) -> None:
        """``out = gelu_tanh(gate) * up`` (ggml's tanh approximation of GELU)."""
        self._gated("geglu", gate, up, out)

    def add(self, a: cla.Array, b: cla.Array, out: cla.Array) -> None:
        """``out = a + b``; `b` has `a`'s shape or is one row ([d] or [1, d]) added to every row."""
        check_array("a", a)
        check_array("b", b)
        check_array("out", out, shape=a.shape)
        d = a.shape[-1] if a.ndim else 1
        one_row = tuple(b.shape) in ((d,), (1, d))
        check(tuple(b.shape) == tuple(a.shape) or one_row,
              f"add: b must have shape {a.shape} or be one row of {d}, got {b.shape}")
        b_len = a.size if tuple(b.shape) == tuple(a.shape) else d
        self._elementwise("add", a.size, *buf(a), *buf(b), *buf(out), np.int32(a.size),
                          np.int32(b_len))

    def scale(self, x: cla.Array, s: float, out: cla.Array) -> None:
        """``out = x * s``."""
        check_array("x", x)
        check_array("out", out, shape=x.shape)
        self._elementwise("scale", x.size, *buf(x), *buf(out), np.int32(x.size), np.float32(s))

    def copy_rows(self, src: cla.Array, dst: cla.Array, start: int) -> None:
        """``dst[start:start+len(src)] = src`` (a KV-cache write), as one device copy."""
        check_array("src", src, dtype=src.dtype)
        check_array("dst", dst, dtype=dst.dtype)
        check(src.dtype == dst.dtype and src.shape[1:] == dst.shape[1:],
              f"copy_rows: src {src.dtype} {src.shape} does not fit rows of dst "
              f"{dst.dtype} {dst.shape}")
        check(start >= 0 and start + len(src) <= len(dst),
              f"copy_rows: rows {start}..{start + len(src)} do not fit in dst's {len(dst)} rows")
        if src.nbytes == 0:
            return
        row_bytes = dst.nbytes // len(dst)
        dst_offset = dst.offset + start * row_bytes
        if src.base_data == dst.base_data:
            check(src.offset + src.nbytes <= dst_offset or dst_offset + src.nbytes <= src.offset,
                  "copy_rows: src and dst overlap in device memory")
        cl.enqueue_copy(self.queue, dst.base_data, src.base_data, byte_count=src.nbytes,
                        src_offset=src.offset, dst_offset=dst_offset)
