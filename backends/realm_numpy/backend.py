"""The numpy reference backend: the executable definition of every op in `realm.backend`.

Plain numpy in float32, written to be read and trusted rather than to be fast. Every
other backend is tested against it op by op. Inputs are checked strictly (shapes,
dtypes, ranges, by `realm.op_checks` like every backend's) so that a model-layer bug
shows up here as a clear error instead of as a broadcast that happens to work.

Outputs may alias inputs (the model normalises, ropes and adds in place), so every op
reads all it needs before writing ``out``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from realm.backend import (
    OPS,
    Availability,
    DeviceInfo,
    QuantTensor,
    RopeMode,
    check_quant_upload,
    parse_device,
)
from realm.errors import BackendUnavailableError
from realm.gguf.types import GGMLType
from realm.op_checks import OpChecks, check_ids_in_range, check_paged_indices, check_rows
from realm.quants import SUPPORTED_TYPES, dequantize, row_nbytes
from realm.quants.activations import dequantize_q16, quantize_q16

# Quantized weights are decoded this many rows at a time, so a 262144 x 640 embedding
# never needs more than a 10 MB float32 scratch copy.
DEQUANT_CHUNK_ROWS = 4096

# ggml's constants for the tanh approximation of GELU (ggml-cpu/vec.h).
GELU_COEF_A = np.float32(0.044715)
SQRT_2_OVER_PI = np.float32(0.79788456080286535587989211986876)

_QUANT_OPS = frozenset({"dequantize", "matmul", "get_rows"})

# numpy indexes any strides, so only dequantize's out (written as flat rows) must be contiguous.
CHECKS = OpChecks(np.ndarray, "numpy array")


def _host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


class NumpyBackend:
    """Reference backend (device ``"numpy"``): plain numpy, float32, obviously right.

    >>> be = NumpyBackend()
    >>> x = be.upload(np.ones((2, 4), np.float32))
    >>> out = be.empty((2, 4))
    >>> be.scale(x, 3.0, out)
    >>> be.download(out)[0].tolist()
    [3.0, 3.0, 3.0, 3.0]
    """

    name: ClassVar[str] = "numpy"

    @classmethod
    def probe(cls) -> Availability:
        """Always available: numpy is a dependency of realm itself."""
        info = DeviceInfo(
            "numpy", "host CPU (numpy reference)", kind="cpu", memory_bytes=_host_memory_bytes()
        )
        return Availability(True, (info,))

    def __init__(self, device: str = "numpy", n_threads: int | None = None) -> None:
        spec = parse_device(device or "numpy")
        if spec.backend != "numpy" or spec.indices:
            raise BackendUnavailableError(f"the numpy backend has one device, 'numpy'; got device {device!r}")
        # numpy's BLAS picks its own threads; the argument is kept for the common signature.
        self.n_threads = n_threads
        self.device = "numpy"

    # ------------------------------------------------------------------ memory

    def upload(self, host: np.ndarray) -> np.ndarray:
        """A private C-contiguous copy of `host` (device memory never aliases the caller's)."""
        return np.array(host, copy=True, order="C")

    def upload_quant(
        self, raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...], name: str = ""
    ) -> QuantTensor:
        """Keep the raw blocks as they are (a memory map stays a memory map: no copy)."""
        raw, qtype, shape, _ = check_quant_upload(raw, qtype, shape, name, SUPPORTED_TYPES, "numpy")
        return QuantTensor(raw, qtype, shape, name)

    def download(self, x: np.ndarray) -> np.ndarray:
        """A host copy of `x`."""
        return np.array(x, copy=True)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """Uninitialised device memory."""
        return np.empty(shape, dtype=dtype)

    def supports(self, op: str, qtype: GGMLType | None = None) -> bool:
        """Every op; quantized weights of every type `realm.quants` can decode."""
        if op not in OPS:
            # The optional ops are defined here (``matmul_q16`` is, for the conformance suite)
            # but not offered to models: the reference's models stay the float32 definition.
            return False
        if qtype is None:
            return True
        return op in _QUANT_OPS and GGMLType(qtype) in SUPPORTED_TYPES

    def synchronize(self) -> None:
        """Nothing to wait for: numpy runs synchronously."""

    # ------------------------------------------------------------------ weights

    def _quant_rows(self, w: QuantTensor) -> np.ndarray:
        return w.data.reshape(w.shape[0], row_nbytes(w.qtype, w.shape[1]))

    def dequantize(self, w: QuantTensor, out: np.ndarray) -> None:
        """``out = float32(w)`` for a tensor of any rank."""
        CHECKS.dequantize(w, out)
        n_cols = w.shape[-1]
        rows = w.data.reshape(-1, row_nbytes(w.qtype, n_cols))
        flat_out = out.reshape(-1, n_cols)
        for r0 in range(0, rows.shape[0], DEQUANT_CHUNK_ROWS):
            r1 = min(r0 + DEQUANT_CHUNK_ROWS, rows.shape[0])
            flat_out[r0:r1] = dequantize(rows[r0:r1], w.qtype, (r1 - r0, n_cols), w.name)

    def matmul(self, x: np.ndarray, w: QuantTensor | np.ndarray, out: np.ndarray) -> None:
        """``out [n, m] = x [n, k] @ w [m, k].T``, accumulated in float32."""
        CHECKS.matmul(x, w, out)
        n, k = x.shape
        if isinstance(w, QuantTensor):
            m = w.shape[0]
            rows = self._quant_rows(w)
            result = np.empty((n, m), np.float32)  # x may alias out
            for r0 in range(0, m, DEQUANT_CHUNK_ROWS):
                r1 = min(r0 + DEQUANT_CHUNK_ROWS, m)
                chunk = dequantize(rows[r0:r1], w.qtype, (r1 - r0, k), w.name)
                # No out= here: numpy drops BLAS for a strided out (100x slower).
                result[:, r0:r1] = x @ chunk.T
            out[...] = result
        else:
            out[...] = np.matmul(x, w.T)

    def matmul_q16(self, x: np.ndarray, w: QuantTensor, out: np.ndarray) -> None:
        """``matmul`` of ``x`` rounded to 16-bit integer blocks (`quantize_q16`)."""
        CHECKS.matmul_q16(x, w, out)
        self.matmul(dequantize_q16(*quantize_q16(x)), w, out)

    def matmuls_q16(self, x: np.ndarray, ws: list[QuantTensor], outs: list[np.ndarray]) -> None:
        """`matmul_q16` of one ``x`` by each of 1 to 3 weights."""
        CHECKS.matmuls_q16(x, ws, outs)
        x = np.array(x, copy=True)  # an out may alias x
        for w, out in zip(ws, outs, strict=True):
            self.matmul_q16(x, w, out)

    def rms_norm_matmuls_q16(self, x: np.ndarray, weight: np.ndarray, eps: float,
                             ws: list[QuantTensor], outs: list[np.ndarray], gated: str | None = None) -> None:
        """`matmuls_q16` of ``rms_norm(x, weight, eps)`` (``x`` is left as it was), then the
        ``gated`` activation of the two outputs into the first."""
        CHECKS.rms_norm_matmuls_q16(x, weight, ws, outs, gated)
        normed = np.empty_like(x)
        self.rms_norm(x, weight, eps, normed)
        self.matmuls_q16(normed, ws, outs)
        if gated is not None:
            getattr(self, gated)(outs[0], outs[1], outs[0])

    def get_rows(self, w: QuantTensor | np.ndarray, ids: np.ndarray, out: np.ndarray) -> None:
        """``out [n, d] = w[ids]``, decoding only the rows asked for."""
        CHECKS.get_rows(w, ids, out)
        n_rows, d = w.shape
        check_ids_in_range(w, n_rows, ids)
        if isinstance(w, QuantTensor):
            out[...] = dequantize(self._quant_rows(w)[ids], w.qtype, (len(ids), d), w.name)
        else:
            out[...] = w[ids]

    # ------------------------------------------------------------------ activations

    def rms_norm(self, x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> None:
        """``out = x / sqrt(mean(x**2, last axis) + eps) * weight``."""
        CHECKS.rms_norm(x, weight, out)
        mean_square = np.mean(np.square(x), axis=-1, keepdims=True, dtype=np.float32)
        inv_rms = np.float32(1.0) / np.sqrt(mean_square + np.float32(eps))
        out[...] = (x * inv_rms) * weight

    def rope(
        self,
        x: np.ndarray,
        positions: np.ndarray,
        n_rot: int,
        base: float,
        mode: RopeMode,
        out: np.ndarray,
        freq_factors: np.ndarray | None = None,
        freq_scale: float = 1.0,
    ) -> None:
        """Rotate the first `n_rot` dims of every head; see `realm.backend` for the angles."""
        CHECKS.rope(x, positions, n_rot, mode, out, freq_factors)
        half = n_rot // 2
        exponents = np.arange(0, n_rot, 2, dtype=np.float32) / np.float32(n_rot)  # 2i / n_rot
        inv_freq = np.float32(base) ** -exponents
        if freq_factors is not None:
            inv_freq = inv_freq / freq_factors
        theta = positions.astype(np.float32)[:, None] * (np.float32(freq_scale) * inv_freq)
        cos = np.cos(theta)[:, None, :]  # [n, 1, half]: the same angle for every head
        sin = np.sin(theta)[:, None, :]
        if RopeMode(mode) == RopeMode.NORMAL:
            first, second = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        else:
            first, second = x[..., :half], x[..., half:n_rot]
        rotated_first = first * cos - second * sin
        rotated_second = first * sin + second * cos
        out[..., n_rot:] = x[..., n_rot:]
        if RopeMode(mode) == RopeMode.NORMAL:
            out[..., 0:n_rot:2], out[..., 1:n_rot:2] = rotated_first, rotated_second
        else:
            out[..., :half], out[..., half:n_rot] = rotated_first, rotated_second

    def attention(
        self,
        q: np.ndarray,
        k_cache: np.ndarray,
        v_cache: np.ndarray,
        n_past: int,
        scale: float,
        out: np.ndarray,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None:
        """Causal (optionally windowed, soft-capped) softmax attention with grouped KV heads."""
        CHECKS.attention(q, k_cache, v_cache, n_past, out, window, softcap)
        n, n_head, _ = q.shape
        n_kv_head = k_cache.shape[1]
        n_keys = n_past + n

        group = n_head // n_kv_head
        # Query head h reads kv head h // group: repeat each kv head `group` times.
        k = np.repeat(k_cache[:n_keys], group, axis=1).transpose(1, 2, 0)  # [head, hd, keys]
        v = np.repeat(v_cache[:n_keys], group, axis=1).transpose(1, 0, 2)  # [head, keys, hd_v]
        scores = np.matmul(q.transpose(1, 0, 2), k) * np.float32(scale)  # [head, n, keys]
        if softcap is not None:
            scores = np.float32(softcap) * np.tanh(scores / np.float32(softcap))
        query_pos = n_past + np.arange(n)[:, None]
        key_pos = np.arange(n_keys)[None, :]
        visible = key_pos <= query_pos
        if window is not None:
            visible &= query_pos - key_pos < window
        scores = np.where(visible, scores, np.float32(-np.inf))
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        out[...] = np.matmul(probs, v).transpose(1, 0, 2)

    def set_rows(self, src: np.ndarray, dst: np.ndarray, rows: np.ndarray) -> None:
        """``dst[rows[i]] = src[i]`` (a paged KV write: ``rows`` are the tokens' slots)."""
        CHECKS.set_rows(src, dst, rows)
        check_rows(len(dst), rows)
        dst[rows] = src

    def rope_write_kv(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, positions: np.ndarray,
                      n_rot: int, base: float, mode: RopeMode, k_pool: np.ndarray, v_pool: np.ndarray,
                      slots: np.ndarray, freq_factors: np.ndarray | None = None,
                      freq_scale: float = 1.0) -> None:
        """`rope` of q and k in place, then `set_rows` of k and v at ``slots`` (checked first)."""
        CHECKS.rope_write_kv(q, k, v, positions, n_rot, mode, k_pool, v_pool, slots, freq_factors)
        check_rows(len(k_pool), slots, op="rope_write_kv")
        for x in (q, k):
            self.rope(x, positions, n_rot, base, mode, x, freq_factors, freq_scale)
        self.set_rows(k, k_pool, slots)
        self.set_rows(v, v_pool, slots)

    def attention_paged(
        self,
        q: np.ndarray,
        k_pool: np.ndarray,
        v_pool: np.ndarray,
        block_table: np.ndarray,
        block_size: int,
        seq_ids: np.ndarray,
        positions: np.ndarray,
        scale: float,
        out: np.ndarray,
        window: int | None = None,
        softcap: float | None = None,
    ) -> None:
        """`attention` for tokens of many sequences, each reading its own sequence's blocks.

        Token ``i`` (a query at position ``positions[i]`` of sequence ``seq_ids[i]``) attends to
        that sequence's positions ``0..positions[i]`` (within ``window``), whose keys and values
        sit at slot ``block_table[s, p // block_size] * block_size + p % block_size`` of the pools.
        """
        CHECKS.attention_paged(q, k_pool, v_pool, block_table, block_size, seq_ids, positions, out,
                               window, softcap)
        check_paged_indices(block_table, block_size, len(k_pool), seq_ids, positions)
        group = q.shape[1] // k_pool.shape[1]
        for i in range(q.shape[0]):  # one token at a time: obviously right, and batch-invariant
            p = int(positions[i])
            key_pos = np.arange(p + 1)
            if window is not None:
                key_pos = key_pos[p - key_pos < window]
            slots = block_table[seq_ids[i], key_pos // block_size] * block_size + key_pos % block_size
            k = np.repeat(k_pool[slots], group, axis=1)  # [keys, head, hd]
            v = np.repeat(v_pool[slots], group, axis=1)  # [keys, head, hd_v]
            scores = np.einsum("hd,khd->hk", q[i], k) * np.float32(scale)
            if softcap is not None:
                scores = np.float32(softcap) * np.tanh(scores / np.float32(softcap))
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            out[i] = np.einsum("hk,khd->hd", probs, v)

    def swiglu(self, gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
        """``out = silu(gate) * up`` with ``silu(g) = g / (1 + exp(-g))``."""
        CHECKS.gated("swiglu", gate, up, out)
        with np.errstate(over="ignore"):  # exp(-g) -> inf for very negative g gives silu = -0
            out[...] = gate / (np.float32(1.0) + np.exp(-gate)) * up

    def geglu(self, gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
        """``out = gelu_tanh(gate) * up`` (ggml's tanh approximation of GELU)."""
        CHECKS.gated("geglu", gate, up, out)
        inner = SQRT_2_OVER_PI * gate * (np.float32(1.0) + GELU_COEF_A * gate * gate)
        out[...] = np.float32(0.5) * gate * (np.float32(1.0) + np.tanh(inner)) * up

    def add(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """``out = a + b``; `b` has `a`'s shape or is one row ([d] or [1, d]) added to every row."""
        CHECKS.add(a, b, out)
        np.add(a, b if b.shape == a.shape else b.reshape(a.shape[-1]), out=out)

    def scale(self, x: np.ndarray, s: float, out: np.ndarray) -> None:
        """``out = x * s``."""
        CHECKS.scale(x, out)
        np.multiply(x, np.float32(s), out=out)

    def count_nonfinite(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out[r]`` = how many values of row ``r`` are NaN, +inf or -inf."""
        CHECKS.count_nonfinite(x, out)
        out[:] = np.count_nonzero(~np.isfinite(x), axis=1)

    def argmax_rows(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out[r]`` = ``np.argmax(x[r])``: the first maximum of the row, or its first NaN."""
        CHECKS.argmax_rows(x, out)
        out[:] = np.argmax(x, axis=1)

    def copy_rows(self, src: np.ndarray, dst: np.ndarray, start: int) -> None:
        """``dst[start:start+len(src)] = src`` (a KV-cache write)."""
        CHECKS.copy_rows(src, dst, start)
        dst[start : start + len(src)] = src
