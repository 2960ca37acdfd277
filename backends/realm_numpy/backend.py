"""The numpy reference backend: the executable definition of every op in `realm.backend`.

Plain numpy in float32, written to be read and trusted rather than to be fast. Every
other backend is tested against it op by op. Inputs are checked strictly (shapes,
dtypes, ranges) so that a model-layer bug shows up here as a clear error instead of
as a broadcast that happens to work.

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
from realm.errors import BackendUnavailableError, RealmError
from realm.gguf.types import GGMLType
from realm.quants import SUPPORTED_TYPES, dequantize, row_nbytes

# Quantized weights are decoded this many rows at a time, so a 262144 x 640 embedding
# never needs more than a 10 MB float32 scratch copy.
DEQUANT_CHUNK_ROWS = 4096

# ggml's constants for the tanh approximation of GELU (ggml-cpu/vec.h).
GELU_COEF_A = np.float32(0.044715)
SQRT_2_OVER_PI = np.float32(0.79788456080286535587989211986876)

_QUANT_OPS = frozenset({"dequantize", "matmul", "get_rows"})


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RealmError(message)


def _check_f32(name: str, x: Any, shape: tuple[int, ...] | None = None) -> None:
    _check(isinstance(x, np.ndarray), f"{name} must be a numpy array, got {type(x).__name__}")
    _check(x.dtype == np.float32, f"{name} must be float32, got {x.dtype}")
    if shape is not None:
        _check(x.shape == shape, f"{name} must have shape {shape}, got {x.shape}")


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
            return False
        if qtype is None:
            return True
        return op in _QUANT_OPS and GGMLType(qtype) in SUPPORTED_TYPES

    def synchronize(self) -> None:
        """Nothing to wait for: numpy runs synchronously."""

    # ------------------------------------------------------------------ weights

    def _quant_rows(self, w: QuantTensor) -> np.ndarray:
        _check(len(w.shape) == 2, f"tensor {w.name!r} must be 2-D, has shape {w.shape}")
        return w.data.reshape(w.shape[0], row_nbytes(w.qtype, w.shape[1]))

    def dequantize(self, w: QuantTensor, out: np.ndarray) -> None:
        """``out = float32(w)`` for a tensor of any rank."""
        _check_f32("out", out, tuple(w.shape))
        _check(out.flags.c_contiguous, "dequantize out must be C-contiguous")
        n_cols = w.shape[-1]
        rows = w.data.reshape(-1, row_nbytes(w.qtype, n_cols))
        flat_out = out.reshape(-1, n_cols)
        for r0 in range(0, rows.shape[0], DEQUANT_CHUNK_ROWS):
            r1 = min(r0 + DEQUANT_CHUNK_ROWS, rows.shape[0])
            flat_out[r0:r1] = dequantize(rows[r0:r1], w.qtype, (r1 - r0, n_cols), w.name)

    def matmul(self, x: np.ndarray, w: QuantTensor | np.ndarray, out: np.ndarray) -> None:
        """``out [n, m] = x [n, k] @ w [m, k].T``, accumulated in float32."""
        _check_f32("x", x)
        _check(x.ndim == 2, f"matmul x must be [n, k], got shape {x.shape}")
        n, k = x.shape
        if isinstance(w, QuantTensor):
            m = w.shape[0]
            _check(tuple(w.shape) == (m, k), f"matmul weight {w.name!r} has shape {w.shape}, x has k={k}")
            _check_f32("out", out, (n, m))
            rows = self._quant_rows(w)
            result = np.empty((n, m), np.float32)  # x may alias out
            for r0 in range(0, m, DEQUANT_CHUNK_ROWS):
                r1 = min(r0 + DEQUANT_CHUNK_ROWS, m)
                chunk = dequantize(rows[r0:r1], w.qtype, (r1 - r0, k), w.name)
                # No out= here: numpy drops BLAS for a strided out (100x slower).
                result[:, r0:r1] = x @ chunk.T
            out[...] = result
        else:
            _check_f32("w", w)
            _check(w.ndim == 2 and w.shape[1] == k, f"matmul w must be [m, {k}], got shape {w.shape}")
            _check_f32("out", out, (n, w.shape[0]))
            out[...] = np.matmul(x, w.T)

    def get_rows(self, w: QuantTensor | np.ndarray, ids: np.ndarray, out: np.ndarray) -> None:
        """``out [n, d] = w[ids]``, decoding only the rows asked for."""
        _check(
            isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.ndim == 1,
            f"ids must be a 1-D int32 array, got {getattr(ids, 'dtype', type(ids))} "
            f"{getattr(ids, 'shape', '')}",
        )
        name = w.name if isinstance(w, QuantTensor) else "w"
        _check(len(w.shape) == 2, f"get_rows from {name!r}: need a 2-D table, got {w.shape}")
        n_rows, d = w.shape
        _check_f32("out", out, (len(ids), d))
        bad = (ids < 0) | (ids >= n_rows)
        _check(
            not bad.any(),
            f"get_rows from {name!r} ({n_rows} rows): id "
            f"{int(ids[bad][0]) if bad.any() else 0} is out of range",
        )
        if isinstance(w, QuantTensor):
            out[...] = dequantize(self._quant_rows(w)[ids], w.qtype, (len(ids), d), w.name)
        else:
            _check_f32("w", w)
            out[...] = w[ids]

    # ------------------------------------------------------------------ activations

    def rms_norm(self, x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> None:
        """``out = x / sqrt(mean(x**2, last axis) + eps) * weight``."""
        _check_f32("x", x)
        _check_f32("weight", weight, (x.shape[-1],))
        _check_f32("out", out, x.shape)
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
        _check_f32("x", x)
        _check(x.ndim == 3, f"rope x must be [n, heads, head_dim], got shape {x.shape}")
        _check_f32("out", out, x.shape)
        n, _, head_dim = x.shape
        _check(
            isinstance(positions, np.ndarray) and positions.dtype == np.int32 and positions.shape == (n,),
            f"rope positions must be int32 [{n}]",
        )
        _check(
            n_rot % 2 == 0 and 0 < n_rot <= head_dim,
            f"rope n_rot must be even and in 1..{head_dim}, got {n_rot}",
        )
        half = n_rot // 2
        exponents = np.arange(0, n_rot, 2, dtype=np.float32) / np.float32(n_rot)  # 2i / n_rot
        inv_freq = np.float32(base) ** -exponents
        if freq_factors is not None:
            _check_f32("freq_factors", freq_factors, (half,))
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
        for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
            _check_f32(name, t)
            _check(t.ndim == 3, f"attention {name} must be 3-D, got shape {t.shape}")
        n, n_head, head_dim = q.shape
        ctx, n_kv_head, _ = k_cache.shape
        n_keys = n_past + n
        _check(k_cache.shape[2] == head_dim, f"k_cache head_dim {k_cache.shape[2]} != q's {head_dim}")
        _check(
            v_cache.shape[:2] == (ctx, n_kv_head),
            f"v_cache shape {v_cache.shape} does not match k_cache {k_cache.shape}",
        )
        _check(n_head % n_kv_head == 0, f"{n_head} query heads do not group over {n_kv_head} kv heads")
        _check(n_past >= 0 and n_keys <= ctx, f"n_past {n_past} + n {n} exceeds the cache's {ctx} rows")
        _check(window is None or window >= 1, f"attention window must be >= 1, got {window}")
        _check_f32("out", out, (n, n_head, v_cache.shape[2]))

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

    def swiglu(self, gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
        """``out = silu(gate) * up`` with ``silu(g) = g / (1 + exp(-g))``."""
        self._check_pair(gate, up, out)
        with np.errstate(over="ignore"):  # exp(-g) -> inf for very negative g gives silu = -0
            out[...] = gate / (np.float32(1.0) + np.exp(-gate)) * up

    def geglu(self, gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
        """``out = gelu_tanh(gate) * up`` (ggml's tanh approximation of GELU)."""
        self._check_pair(gate, up, out)
        inner = SQRT_2_OVER_PI * gate * (np.float32(1.0) + GELU_COEF_A * gate * gate)
        out[...] = np.float32(0.5) * gate * (np.float32(1.0) + np.tanh(inner)) * up

    def add(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """``out = a + b``; `b` has `a`'s shape or is one row ([d] or [1, d]) added to every row."""
        _check_f32("a", a)
        _check_f32("b", b)
        _check_f32("out", out, a.shape)
        one_row = b.shape in ((a.shape[-1],), (1, a.shape[-1]))
        _check(
            b.shape == a.shape or one_row,
            f"add: b must have shape {a.shape} or be one row of {a.shape[-1]}, got {b.shape}",
        )
        np.add(a, b if b.shape == a.shape else b.reshape(a.shape[-1]), out=out)

    def scale(self, x: np.ndarray, s: float, out: np.ndarray) -> None:
        """``out = x * s``."""
        _check_f32("x", x)
        _check_f32("out", out, x.shape)
        np.multiply(x, np.float32(s), out=out)

    def copy_rows(self, src: np.ndarray, dst: np.ndarray, start: int) -> None:
        """``dst[start:start+len(src)] = src`` (a KV-cache write)."""
        _check(
            src.dtype == dst.dtype and src.shape[1:] == dst.shape[1:],
            f"copy_rows: src {src.dtype} {src.shape} does not fit rows of dst {dst.dtype} {dst.shape}",
        )
        _check(
            start >= 0 and start + len(src) <= len(dst),
            f"copy_rows: rows {start}..{start + len(src)} do not fit in dst's {len(dst)} rows",
        )
        dst[start : start + len(src)] = src

    @staticmethod
    def _check_pair(gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
        _check_f32("gate", gate)
        _check_f32("up", up, gate.shape)
        _check_f32("out", out, gate.shape)
