"""The conformance checks fail on backends with typical, subtle bugs.

Each mutant is the reference backend with one op broken the way a real kernel goes
wrong (wrong pair layout, missing mask, float16 accumulation, an unwritten element...).
The matching check must raise AssertionError, otherwise the suite would let that bug
through on a real backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from conformance import (
    check_add,
    check_attention,
    check_copy_rows,
    check_dequantize,
    check_gated,
    check_get_rows,
    check_matmul,
    check_rms_norm,
    check_rope,
    check_scale,
)

from realm.backend import RopeMode
from realm.gguf.types import GGMLType
from realm_numpy import NumpyBackend


class Mutant(NumpyBackend):
    def __init__(self) -> None:
        super().__init__()


class DequantizeOneUlpOff(Mutant):
    def dequantize(self, w, out):
        super().dequantize(w, out)
        out.reshape(-1)[5] = np.nextafter(out.reshape(-1)[5], np.float32(np.inf))


class MatmulInFloat16(Mutant):
    def matmul(self, x, w, out):
        super().matmul(x, w, out)
        out[...] = out.astype(np.float16).astype(np.float32)


class MatmulSkipsLastChunk(Mutant):
    def matmul(self, x, w, out):
        super().matmul(x, w, out)
        if out.shape[1] > 4096:
            out[:, 4096:] = 0.0


class MatmulForgetsLastElement(Mutant):
    def matmul(self, x, w, out):
        saved = out[-1, -1].copy()
        super().matmul(x, w, out)
        out[-1, -1] = saved


class GetRowsOffByOne(Mutant):
    def get_rows(self, w, ids, out):
        super().get_rows(w, np.minimum(ids + 1, w.shape[0] - 1).astype(np.int32), out)


class RmsNormWithoutEps(Mutant):
    def rms_norm(self, x, weight, eps, out):
        super().rms_norm(x, weight, 0.0, out)


class RopeModesSwapped(Mutant):
    def rope(self, x, positions, n_rot, base, mode, out, **kw):
        other = RopeMode.NEOX if mode == RopeMode.NORMAL else RopeMode.NORMAL
        super().rope(x, positions, n_rot, base, other, out, **kw)


class RopeIgnoresFreqFactors(Mutant):
    def rope(self, x, positions, n_rot, base, mode, out, freq_factors=None, freq_scale=1.0):
        super().rope(x, positions, n_rot, base, mode, out, None, freq_scale)


class RopeRotatesWholeHead(Mutant):
    def rope(self, x, positions, n_rot, base, mode, out, **kw):
        super().rope(x, positions, x.shape[-1], base, mode, out, **kw)


class AttentionNotCausal(Mutant):
    def attention(self, q, k_cache, v_cache, n_past, scale, out, window=None, softcap=None):
        # Every query sees all n_past + n keys: what forgetting the causal mask does.
        n = q.shape[0]
        for i in range(n):
            super().attention(q[i : i + 1], k_cache, v_cache, n_past + n - 1, scale,
                              out[i : i + 1], window, softcap)


class AttentionIgnoresWindow(Mutant):
    def attention(self, q, k_cache, v_cache, n_past, scale, out, window=None, softcap=None):
        super().attention(q, k_cache, v_cache, n_past, scale, out, None, softcap)


class AttentionWrongKvHead(Mutant):
    def attention(self, q, k_cache, v_cache, n_past, scale, out, window=None, softcap=None):
        # Interleaved mapping (h % n_kv) instead of grouped (h // group).
        n_kv = k_cache.shape[1]
        order = np.argsort(np.arange(q.shape[1]) % n_kv, kind="stable")
        tmp = np.empty_like(out)
        super().attention(q[:, order], k_cache, v_cache, n_past, scale, tmp, window, softcap)
        out[:, order] = tmp


class AttentionReadsWholeCache(Mutant):
    def attention(self, q, k_cache, v_cache, n_past, scale, out, window=None, softcap=None):
        ctx = k_cache.shape[0]
        keys = np.nan_to_num(k_cache)
        super().attention(q, keys, np.nan_to_num(v_cache), ctx - q.shape[0], scale, out,
                          window, softcap)


class AttentionIgnoresSoftcap(Mutant):
    def attention(self, q, k_cache, v_cache, n_past, scale, out, window=None, softcap=None):
        super().attention(q, k_cache, v_cache, n_past, scale, out, window, None)


class GegluWithErf(Mutant):
    def geglu(self, gate, up, out):
        from math import erf, sqrt

        g = gate.astype(np.float64)
        out[...] = 0.5 * g * (1 + np.vectorize(erf)(g / sqrt(2))) * up


class SwigluAsSigmoid(Mutant):
    def swiglu(self, gate, up, out):
        out[...] = up / (1 + np.exp(-gate))


class AddIgnoresBroadcast(Mutant):
    def add(self, a, b, out):
        super().add(a, b if b.shape == a.shape else b.reshape(-1)[::-1].copy(), out)


class ScaleRoundsThroughFloat16(Mutant):
    def scale(self, x, s, out):
        out[...] = (x * np.float16(s)).astype(np.float32)


class CopyRowsOneLate(Mutant):
    def copy_rows(self, src, dst, start):
        super().copy_rows(src[: len(src) - 1] if len(src) > 1 else src, dst,
                          start + (len(src) == 1))


MUTANTS = [
    (DequantizeOneUlpOff, check_dequantize, dict(qtype=GGMLType.Q4_K, shape=(3, 256))),
    (MatmulInFloat16, check_matmul, dict(qtype=GGMLType.Q8_0, n=3, m=9, k_blocks=4)),
    (MatmulSkipsLastChunk, check_matmul, dict(qtype=GGMLType.Q8_0, n=2, m=4099, k_blocks=1)),
    (MatmulForgetsLastElement, check_matmul, dict(qtype=GGMLType.Q4_0, n=2, m=5, k_blocks=1)),
    (GetRowsOffByOne, check_get_rows, dict(qtype=GGMLType.Q6_K, n_rows=9, ids=[0, 3])),
    (RmsNormWithoutEps, check_rms_norm, dict(shape=(8, 64), eps=1e-5, in_place=False)),
    (RopeModesSwapped, check_rope, dict(n=3, n_head=2, head_dim=64, n_rot=64,
                                        mode=RopeMode.NEOX, max_pos=50, freq_factors=False,
                                        freq_scale=1.0, in_place=False)),
    (RopeIgnoresFreqFactors, check_rope, dict(n=3, n_head=2, head_dim=64, n_rot=64,
                                              mode=RopeMode.NORMAL, max_pos=50,
                                              freq_factors=True, freq_scale=1.0,
                                              in_place=True)),
    (RopeRotatesWholeHead, check_rope, dict(n=3, n_head=2, head_dim=128, n_rot=64,
                                            mode=RopeMode.NEOX, max_pos=50, freq_factors=False,
                                            freq_scale=1.0, in_place=False)),
    (AttentionNotCausal, check_attention, dict(n=5, n_past=0, n_head=2, n_kv_head=2,
                                               head_dim=16, ctx=8)),
    (AttentionIgnoresWindow, check_attention, dict(n=4, n_past=10, n_head=2, n_kv_head=1,
                                                   head_dim=16, ctx=20, window=3)),
    (AttentionWrongKvHead, check_attention, dict(n=3, n_past=2, n_head=8, n_kv_head=2,
                                                 head_dim=16, ctx=8)),
    (AttentionReadsWholeCache, check_attention, dict(n=1, n_past=4, n_head=2, n_kv_head=2,
                                                     head_dim=16, ctx=9)),
    (AttentionIgnoresSoftcap, check_attention, dict(n=3, n_past=2, n_head=2, n_kv_head=1,
                                                       head_dim=64, ctx=6, softcap=5.0)),
    (GegluWithErf, check_gated, dict(op="geglu", shape=(4, 64), spread=3.0, in_place=False)),
    (SwigluAsSigmoid, check_gated, dict(op="swiglu", shape=(4, 64), spread=3.0,
                                        in_place=True)),
    (AddIgnoresBroadcast, check_add, dict(a_shape=(3, 8), b_shape=(8,), in_place=False)),
    (ScaleRoundsThroughFloat16, check_scale, dict(shape=(3, 8), s=0.1, in_place=False)),
    (CopyRowsOneLate, check_copy_rows, dict(n_dst=8, n_src=1, row_shape=(2, 4), start=3)),
]


@pytest.mark.parametrize("mutant,check,case", MUTANTS, ids=[m[0].__name__ for m in MUTANTS])
def test_check_catches(reference, mutant, check, case):
    rng = np.random.default_rng(1)
    check(reference, reference, np.random.default_rng(1), **case)  # the reference passes
    with pytest.raises(AssertionError):
        check(mutant(), reference, rng, **case)


# ----------------------------------------------------------------------------- legitimate variants
# Correct implementations that compute differently from the reference must pass: the
# tolerances leave room for another summation order, float64 intermediates and ggml's
# own way of computing rope angles.


class Float64Everywhere(Mutant):
    """Every float op computed in float64 and rounded once at the end."""

    def matmul(self, x, w, out):
        w64 = w if isinstance(w, np.ndarray) else np.empty(w.shape, np.float32)
        if not isinstance(w, np.ndarray):
            self.dequantize(w, w64)
        out[...] = x.astype(np.float64) @ w64.astype(np.float64).T

    def rms_norm(self, x, weight, eps, out):
        x64 = x.astype(np.float64)
        out[...] = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + eps) * weight

    def swiglu(self, gate, up, out):
        g = gate.astype(np.float64)
        out[...] = g / (1 + np.exp(-g)) * up

    def geglu(self, gate, up, out):
        g = gate.astype(np.float64)
        out[...] = 0.5 * g * (1 + np.tanh(0.7978845608028654 * (g + 0.044715 * g**3))) * up

    def attention(self, q, k_cache, v_cache, n_past, scale, out, window=None, softcap=None):
        tmp = np.empty(out.shape, np.float32)
        super().attention(q.astype(np.float32), k_cache, v_cache, n_past, scale, tmp,
                          window, softcap)
        out[...] = tmp

    def rope(self, x, positions, n_rot, base, mode, out, freq_factors=None, freq_scale=1.0):
        half = n_rot // 2
        inv = float(base) ** (-2.0 * np.arange(half) / n_rot)
        if freq_factors is not None:
            inv = inv / freq_factors.astype(np.float64)
        theta = positions[:, None].astype(np.float64) * freq_scale * inv
        cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        if mode == RopeMode.NORMAL:
            a, b = slice(0, n_rot, 2), slice(1, n_rot, 2)
        else:
            a, b = slice(0, half), slice(half, n_rot)
        x0, x1 = x[..., a].astype(np.float64), x[..., b].astype(np.float64)
        rotated = (x0 * cos - x1 * sin, x0 * sin + x1 * cos)
        out[..., n_rot:] = x[..., n_rot:]
        out[..., a], out[..., b] = rotated


class GgmlRopeAngles(Mutant):
    """ggml's rope cache: theta_i = p * theta_scale**i by repeated float32 multiplication."""

    def rope(self, x, positions, n_rot, base, mode, out, freq_factors=None, freq_scale=1.0):
        half = n_rot // 2
        theta_scale = np.float32(base) ** np.float32(-2.0 / n_rot)
        theta = positions.astype(np.float32)
        angles = np.empty((len(positions), half), np.float32)
        for i in range(half):
            ff = np.float32(1.0) if freq_factors is None else freq_factors[i]
            angles[:, i] = np.float32(freq_scale) * (theta / ff)
            theta = theta * theta_scale
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        if mode == RopeMode.NORMAL:
            a, b = slice(0, n_rot, 2), slice(1, n_rot, 2)
        else:
            a, b = slice(0, half), slice(half, n_rot)
        x0, x1 = x[..., a].copy(), x[..., b].copy()
        out[..., n_rot:] = x[..., n_rot:]
        out[..., a], out[..., b] = x0 * cos - x1 * sin, x0 * sin + x1 * cos


ROPE_FAR = dict(n=4, n_head=2, head_dim=128, n_rot=128, max_pos=8000, freq_factors=True,
                freq_scale=1.0, in_place=False)
VARIANTS = [
    (Float64Everywhere, check_matmul, dict(qtype=GGMLType.Q4_K, n=5, m=33, k_blocks=12)),
    (Float64Everywhere, check_matmul, dict(qtype=None, n=3, m=17, k_blocks=40)),
    (Float64Everywhere, check_rms_norm, dict(shape=(16, 2048), eps=1e-6, in_place=False)),
    (Float64Everywhere, check_gated, dict(op="swiglu", shape=(8, 512), spread=4.0,
                                          in_place=False)),
    (Float64Everywhere, check_gated, dict(op="geglu", shape=(8, 512), spread=4.0,
                                          in_place=False)),
    (Float64Everywhere, check_rope, dict(ROPE_FAR, mode=RopeMode.NEOX)),
    (GgmlRopeAngles, check_rope, dict(ROPE_FAR, mode=RopeMode.NORMAL)),
    (GgmlRopeAngles, check_rope, dict(ROPE_FAR, mode=RopeMode.NEOX, freq_factors=False)),
]


@pytest.mark.parametrize("variant,check,case", VARIANTS,
                         ids=[f"{v[0].__name__}-{v[1].__name__}" for v in VARIANTS])
def test_check_accepts(reference, variant, check, case):
    check(variant(), reference, np.random.default_rng(2), **case)
