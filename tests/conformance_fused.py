"""Conformance checks for the fused ops (`realm.backend.OPTIONAL_OPS`).

A fused op is defined by the ops it fuses. Each check runs both on the backend under test:
the fused call must give the bits of that backend's own unfused calls (the model uses the
fused op only where no hook reads the intermediates it skips, so a pass must not depend on
whether one is watching). It must also agree with the reference's fused op within the
unfused ops' tolerances.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from conformance import F32_EPS, MATMUL_RTOL, as_device, assert_exact, assert_within, nan_buffer

from realm.backend import RopeMode
from realm.gguf.types import GGMLType
from realm.quants.activations import dequantize_q16, quantize_q16
from realm.testing import random_quant_tensor


def _host(be: Any, *arrays: Any) -> list[np.ndarray]:
    be.synchronize()
    return [be.download(a) for a in arrays]


def check_rms_norm_matmuls_q16(be, ref, rng, qtypes: list[GGMLType], n: int, rows: list[int], k: int,
                               eps: float = 1e-6, gated: str | None = None) -> None:
    """``rms_norm_matmuls_q16`` = ``rms_norm`` then ``matmuls_q16`` of its output (then the
    ``gated`` activation of the two outputs into the first), and ``x`` kept."""
    what = f"rms_norm_matmuls_q16 x[{n}, {k}] by {[t.name for t in qtypes]} w{rows} gated={gated}"
    x = (rng.standard_normal((n, k)) * np.exp(rng.uniform(-4, 4, (n, 1)))).astype(np.float32)
    norm = (1.0 + 0.1 * rng.standard_normal(k)).astype(np.float32)
    ws = [("quant", random_quant_tensor(t, (m, k), rng), t, (m, k))
          for t, m in zip(qtypes, rows, strict=True)]
    dev_ws = [as_device(be, w) for w in ws]

    normed = nan_buffer(be, (n, k))
    unfused = [nan_buffer(be, (n, m)) for m in rows]
    be.rms_norm(be.upload(x), be.upload(norm), eps, normed)
    be.matmuls_q16(normed, dev_ws, unfused)
    if gated is not None:
        getattr(be, gated)(unfused[0], unfused[1], unfused[0])

    x_dev = be.upload(x)
    fused = [nan_buffer(be, (n, m)) for m in rows]
    be.rms_norm_matmuls_q16(x_dev, be.upload(norm), eps, dev_ws, fused, gated=gated)
    for a, b, m in zip(_host(be, *fused), _host(be, *unfused), rows, strict=True):
        assert_exact(a, b, f"{what}: the w[{m}, {k}] against the backend's rms_norm + matmuls_q16")
    assert_exact(_host(be, x_dev)[0], x, f"{what}: x must be left as it was")

    ref_outs = [np.full((n, m), np.nan, np.float32) for m in rows]
    ref.rms_norm_matmuls_q16(x, norm, eps, [as_device(ref, w) for w in ws], ref_outs)
    ref_normed = np.empty_like(x)
    ref.rms_norm(x, norm, eps, ref_normed)
    xq, xd = quantize_q16(ref_normed)
    rounded = dequantize_q16(xq, xd)
    # The backend's norm may differ from the reference's by ulps, which can move a value to
    # the next 16-bit step: up to one block scale per value.
    steps = np.repeat(np.asarray(xd, np.float64).reshape(n, -1), 32, axis=1)
    per_value = MATMUL_RTOL * np.abs(rounded).astype(np.float64) + steps
    bounds = [per_value @ abs_weights(ref, w, (m, k)).T + 1e-30 for w, m in zip(ws, rows, strict=True)]
    got = _host(be, *fused)
    if gated is None:
        for a, expected, bound, m in zip(got, ref_outs, bounds, rows, strict=True):
            assert_within(a, expected, bound, f"{what}: the w[{m}, {k}] against the reference")
        return
    # act(g) * u moves by at most |act'| |dg| |u| + |act(g)| |du|, with |act'| < 1.2 and
    # |act(g)| <= |g| for silu and tanh-gelu.
    gate, up = ref_outs
    expected = np.empty_like(gate)
    getattr(ref, gated)(gate, up, expected)
    (b_gate, b_up), g, u = bounds, np.abs(gate.astype(np.float64)), np.abs(up.astype(np.float64))
    assert_within(got[1], up, b_up, f"{what}: up against the reference")
    bound = 1.2 * b_gate * (u + b_up) + (g + b_gate) * b_up + 4e-6 * np.abs(expected) + 1e-30
    assert_within(got[0], expected, bound, f"{what}: {gated}(gate, up) against the reference")


def abs_weights(ref, w, shape) -> np.ndarray:
    """|w| as float64, dequantized by the reference."""
    out = np.empty(shape, np.float32)
    ref.dequantize(as_device(ref, w), out)
    return np.abs(out.astype(np.float64))


def check_rope_write_kv(be, ref, rng, *, n: int, n_head: int, n_kv: int, head_dim: int, v_dim: int,
                        n_rot: int, mode: RopeMode, n_slots: int, freq_factors: bool,
                        freq_scale: float = 1.0) -> None:
    """``rope_write_kv`` = ``rope`` of q and k in place, then ``set_rows`` of k and v at ``slots``."""
    what = (f"rope_write_kv {mode.name} n={n} heads={n_head}/{n_kv} head_dim={head_dim} v_dim={v_dim} "
            f"n_rot={n_rot} freq_factors={freq_factors}")
    q = rng.standard_normal((n, n_head, head_dim)).astype(np.float32)
    k = rng.standard_normal((n, n_kv, head_dim)).astype(np.float32)
    v = rng.standard_normal((n, n_kv, v_dim)).astype(np.float32)
    k_pool = rng.standard_normal((n_slots, n_kv, head_dim)).astype(np.float32)
    v_pool = rng.standard_normal((n_slots, n_kv, v_dim)).astype(np.float32)
    positions = rng.integers(0, 3000, n).astype(np.int32)
    slots = rng.choice(n_slots, n, replace=False).astype(np.int32)
    ff = rng.uniform(1.0, 8.0, n_rot // 2).astype(np.float32) if freq_factors else None
    rope = {"freq_factors": None if ff is None else be.upload(ff), "freq_scale": freq_scale}

    a = [be.upload(t) for t in (q, k, v, k_pool, v_pool)]
    pos, at = be.upload(positions), be.upload(slots)
    for t in a[:2]:
        be.rope(t, pos, n_rot, 10000.0, mode, t, **rope)
    be.set_rows(a[1], a[3], at)
    be.set_rows(a[2], a[4], at)
    b = [be.upload(t) for t in (q, k, v, k_pool, v_pool)]
    be.rope_write_kv(*b[:3], pos, n_rot, 10000.0, mode, b[3], b[4], at, **rope)
    names = ("q", "k", "v", "k_pool", "v_pool")
    fused = _host(be, *b)
    for name, got, want in zip(names, fused, _host(be, *a), strict=True):
        assert_exact(got, want, f"{what}: {name} against the backend's rope + set_rows")

    expected = [t.copy() for t in (q, k, v, k_pool, v_pool)]
    ref.rope_write_kv(*expected[:3], positions, n_rot, 10000.0, mode, expected[3], expected[4], slots,
                      freq_factors=ff, freq_scale=freq_scale)
    # As check_rope: an angle off by a few ulps moves each output by up to that many radians.
    angle_error = 8 * F32_EPS * max(int(positions.max()), 1) * freq_scale
    for name, got, want, x in zip(names, fused, expected, (q, k, v, k_pool, v_pool), strict=True):
        bound = np.abs(x).max() * (angle_error + 4 * F32_EPS) if name in ("q", "k", "k_pool") else 0.0
        assert_within(got, want, np.full(got.shape, bound), f"{what}: {name} against the reference")
    untouched = np.setdiff1d(np.arange(n_slots), slots)
    assert_exact(fused[3][untouched], k_pool[untouched], f"{what}: k_pool rows no token writes")
    assert_exact(fused[4][slots], v, f"{what}: the values, copied bit for bit")
