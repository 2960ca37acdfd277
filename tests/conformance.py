"""Op-by-op checks of a backend against the numpy reference, on fresh random inputs.

Each ``check_*`` function runs one op on both backends and raises AssertionError when
they disagree by more than the op's tolerance. Inputs go in through ``upload`` /
``upload_quant`` and results come back through ``download``: nothing assumes the
backend's arrays are numpy arrays. Output buffers start full of NaN, so an element
the backend forgets to write shows up as a mismatch.

Tolerances, and why:
- exact: dequantize, get_rows, add, scale, copy_rows (one IEEE operation per element,
  or none, so any correct implementation gives identical bits).
- matmul: |diff| <= MATMUL_RTOL * (|x| @ |w|.T): float32 sums in another order differ by a
  few ulps of the sum of magnitudes; a wrong weight or a wrong block is far beyond that.
- rms_norm, swiglu, geglu, attention: a few float32 ulps of relative error from another
  summation order or another exp/tanh implementation.
- rope: the angle ``pos * base**(-2i/n_rot)`` computed another way is off by a few ulps *of
  the angle*, so the allowed error grows with the position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realm.backend import RopeMode
from realm.gguf.types import GGMLType, type_traits
from realm.quants.activations import dequantize_q16, quantize_q16
from realm.testing import random_quant_tensor

F32_EPS = float(np.finfo(np.float32).eps)
MATMUL_RTOL = 2e-5
ELEMENTWISE_RTOL = 2e-6  # silu / gelu / rms_norm: a handful of ulps
ATTENTION_RTOL = 1e-5

# Types a backend must run (the ones llama.cpp's usual model files use); a backend may
# skip the others by answering False from supports(), and those tests are then skipped.
CORE_QTYPES = frozenset({
    GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0,
    GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K,
    GGMLType.Q6_K,
})


# ----------------------------------------------------------------------------- plumbing


def as_device(be: Any, value: Any) -> Any:
    """Upload a host array, or a ("quant", raw, qtype, shape) tuple as a QuantTensor."""
    if isinstance(value, tuple) and value and value[0] == "quant":
        _, raw, qtype, shape = value
        return be.upload_quant(raw, qtype, shape, name=f"random_{GGMLType(qtype).name}")
    if isinstance(value, np.ndarray):
        return be.upload(value)
    return value  # a Python scalar or None


def nan_buffer(be: Any, shape: tuple[int, ...]) -> Any:
    """A device float32 buffer full of NaN: unwritten outputs then fail every comparison."""
    return be.upload(np.full(shape, np.nan, np.float32))


def run(be: Any, op: str, args: list, out_shape: tuple[int, ...], **kwargs: Any) -> np.ndarray:
    """Run ``be.<op>(*args, out, **kwargs)`` on uploaded copies of `args`; return ``out``."""
    dev_args = [as_device(be, a) for a in args]
    dev_kwargs = {k: as_device(be, v) for k, v in kwargs.items()}
    out = nan_buffer(be, out_shape)
    getattr(be, op)(*dev_args, out, **dev_kwargs)
    be.synchronize()
    return be.download(out)


def run_in_place(be: Any, op: str, args: list, **kwargs: Any) -> np.ndarray:
    """Run the op with ``out`` being the device copy of ``args[0]`` (how the model calls it)."""
    dev_args = [as_device(be, a) for a in args]
    dev_kwargs = {k: as_device(be, v) for k, v in kwargs.items()}
    getattr(be, op)(*dev_args, dev_args[0], **dev_kwargs)
    be.synchronize()
    return be.download(dev_args[0])


def assert_exact(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Bit-for-bit equal values (NaNs in the same places)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if not np.array_equal(actual, expected, equal_nan=True):
        bad = ~((actual == expected) | (np.isnan(actual) & np.isnan(expected)))
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values differ; first at {idx}: "
            f"got {actual[idx]!r}, reference {expected[idx]!r}"
        )


def assert_within(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray, what: str) -> None:
    """|actual - expected| <= bound elementwise (bound broadcasts), and no NaN anywhere."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert not np.isnan(expected).any(), f"{what}: the reference produced NaN"
    err = np.abs(actual.astype(np.float64) - expected)
    bound = np.broadcast_to(bound, err.shape)
    bad = ~(err <= bound)  # NaN in `actual` counts as bad
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values off; first at {idx}: got "
            f"{actual[idx]!r}, reference {expected[idx]!r}, allowed error {bound[idx]:.3g}, "
            f"worst error/allowed {float(np.nanmax(err / np.maximum(bound, 1e-38))):.3g}"
        )


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, what: str) -> None:
    """Error within `rtol` of each value plus `rtol` of the largest value (for values near 0)."""
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    assert_within(actual, expected, rtol * (np.abs(expected) + scale) + 1e-30, what)


def weight_shape(qtype: GGMLType, m: int, k_blocks: int) -> tuple[int, int]:
    block = type_traits(qtype).block_size
    # Plain types have one-element "blocks"; give them a row length that is no power of two.
    return (m, k_blocks * block if block > 1 else 33 * k_blocks)


# ----------------------------------------------------------------------------- checks


def check_dequantize(be, ref, rng, qtype: GGMLType, shape: tuple[int, ...]) -> None:
    raw = random_quant_tensor(qtype, shape, rng)
    w = ("quant", raw, qtype, shape)
    assert_exact(run(be, "dequantize", [w], shape), run(ref, "dequantize", [w], shape),
                 f"dequantize {qtype.name} {shape}")


def check_dequantize_raw(be, ref, raw: np.ndarray, qtype: GGMLType, shape: tuple[int, ...]) -> None:
    w = ("quant", raw, qtype, shape)
    assert_exact(run(be, "dequantize", [w], shape), run(ref, "dequantize", [w], shape),
                 f"dequantize {qtype.name} special values")


def check_matmul(be, ref, rng, qtype: GGMLType | None, n: int, m: int, k_blocks: int) -> None:
    """`qtype` None: a plain float32 weight array; otherwise a QuantTensor of that type."""
    if qtype is None:
        k = 32 * k_blocks + 3
        w_host = rng.standard_normal((m, k)).astype(np.float32)
        w, w_float = w_host, w_host
    else:
        shape = weight_shape(qtype, m, k_blocks)
        k = shape[1]
        raw = random_quant_tensor(qtype, shape, rng)
        w = ("quant", raw, qtype, shape)
        w_float = run(ref, "dequantize", [w], shape)
    x = rng.standard_normal((n, k)).astype(np.float32)
    expected = run(ref, "matmul", [x, w], (n, m))
    magnitude = np.abs(x).astype(np.float64) @ np.abs(w_float).astype(np.float64).T
    name = "float32 array" if qtype is None else qtype.name
    assert_within(run(be, "matmul", [x, w], (n, m)), expected, MATMUL_RTOL * magnitude + 1e-30,
                  f"matmul x[{n}, {k}] by {name} w[{m}, {k}]")


def check_matmul_q16(be, ref, rng, qtype: GGMLType, n: int, m: int, k_blocks: int) -> None:
    """``matmul_q16`` against the reference's, within matmul's tolerance.

    Both round ``x`` to the same 16-bit blocks (an exact definition); what may differ is
    the order of the float sums, bounded by the magnitude of the rounded x times |w|.
    Rows of very different sizes and a block of zeros check the per-block scales.
    """
    shape = weight_shape(qtype, m, k_blocks)
    k = shape[1]
    raw = random_quant_tensor(qtype, shape, rng)
    w = ("quant", raw, qtype, shape)
    w_float = run(ref, "dequantize", [w], shape)
    x = (rng.standard_normal((n, k)) * np.exp(rng.uniform(-5, 5, (n, k // 32))).repeat(32, axis=1))
    x = x.astype(np.float32)
    x[0, :32] = 0.0
    expected = run(ref, "matmul_q16", [x, w], (n, m))
    rounded = dequantize_q16(*quantize_q16(x))
    magnitude = np.abs(rounded).astype(np.float64) @ np.abs(w_float).astype(np.float64).T
    assert_within(run(be, "matmul_q16", [x, w], (n, m)), expected, MATMUL_RTOL * magnitude + 1e-30,
                  f"matmul_q16 x[{n}, {k}] by {qtype.name} w[{m}, {k}]")


def check_matmuls_q16(be, ref, rng, qtypes: list[GGMLType], n: int, rows: list[int], k: int) -> None:
    """``matmuls_q16`` (1-3 weights sharing x) against ``matmul_q16`` of each, on the reference."""
    raws = [random_quant_tensor(t, (m, k), rng) for t, m in zip(qtypes, rows, strict=True)]
    x = rng.standard_normal((n, k)).astype(np.float32)
    ws = [("quant", raw, t, (m, k)) for raw, t, m in zip(raws, qtypes, rows, strict=True)]
    dev_ws = [as_device(be, w) for w in ws]
    outs = [nan_buffer(be, (n, m)) for m in rows]
    be.matmuls_q16(be.upload(x), dev_ws, outs)
    be.synchronize()
    rounded = dequantize_q16(*quantize_q16(x))
    for w, out, t, m in zip(ws, outs, qtypes, rows, strict=True):
        expected = run(ref, "matmul_q16", [x, w], (n, m))
        w_float = run(ref, "dequantize", [w], (m, k))
        magnitude = np.abs(rounded).astype(np.float64) @ np.abs(w_float).astype(np.float64).T
        assert_within(be.download(out), expected, MATMUL_RTOL * magnitude + 1e-30,
                      f"matmuls_q16 x[{n}, {k}]: the {t.name} w[{m}, {k}] of {[q.name for q in qtypes]}")


def check_get_rows(be, ref, rng, qtype: GGMLType | None, n_rows: int, ids: list[int]) -> None:
    if qtype is None:
        w = rng.standard_normal((n_rows, 96)).astype(np.float32)
        d = 96
    else:
        shape = weight_shape(qtype, n_rows, 2)
        d = shape[1]
        w = ("quant", random_quant_tensor(qtype, shape, rng), qtype, shape)
    ids_host = np.asarray(ids, dtype=np.int32)
    name = "float32 array" if qtype is None else qtype.name
    assert_exact(run(be, "get_rows", [w, ids_host], (len(ids), d)),
                 run(ref, "get_rows", [w, ids_host], (len(ids), d)),
                 f"get_rows {ids} of {name} [{n_rows}, {d}]")


def check_rms_norm(be, ref, rng, shape: tuple[int, ...], eps: float, in_place: bool) -> None:
    # Rows of very different scales: the norm must not depend on the absolute magnitude.
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-4, 4, shape[:-1] + (1,))))
    x = x.astype(np.float32)
    weight = (1.0 + 0.1 * rng.standard_normal(shape[-1])).astype(np.float32)
    expected = run(ref, "rms_norm", [x, weight, eps], shape)
    actual = (run_in_place(be, "rms_norm", [x, weight, eps]) if in_place
              else run(be, "rms_norm", [x, weight, eps], shape))
    assert_close(actual, expected, ELEMENTWISE_RTOL * 4, f"rms_norm {shape} eps={eps}")


def check_rope(be, ref, rng, *, n: int, n_head: int, head_dim: int, n_rot: int, mode: RopeMode,
               max_pos: int, freq_factors: bool, freq_scale: float, in_place: bool) -> None:
    x = rng.standard_normal((n, n_head, head_dim)).astype(np.float32)
    positions = np.sort(rng.choice(max_pos + 1, size=n, replace=n > max_pos)).astype(np.int32)
    ff = (rng.uniform(1.0, 8.0, n_rot // 2).astype(np.float32) if freq_factors else None)
    args = [x, positions, n_rot, 10000.0, mode]
    kwargs = {"freq_factors": ff, "freq_scale": freq_scale}
    expected = run(ref, "rope", args, x.shape, **kwargs)
    actual = (run_in_place(be, "rope", args, **kwargs) if in_place
              else run(be, "rope", args, x.shape, **kwargs))
    # An angle off by a few ulps (8 eps relative) moves each output by up to that many radians.
    angle_error = 8 * F32_EPS * max(int(positions.max()), 1) * freq_scale
    bound = (np.abs(x).max() * (angle_error + 4 * F32_EPS)).astype(np.float64)
    what = (f"rope {mode.name} n={n} heads={n_head} head_dim={head_dim} n_rot={n_rot} "
            f"max_pos={max_pos} freq_factors={freq_factors} freq_scale={freq_scale}")
    assert_within(actual, expected, np.full(x.shape, bound), what)
    # Dims past n_rot pass through untouched, bit for bit.
    assert_exact(actual[..., n_rot:], x[..., n_rot:], what + " (dims past n_rot)")


def check_attention(be, ref, rng, *, n: int, n_past: int, n_head: int, n_kv_head: int,
                    head_dim: int, ctx: int, window: int | None = None,
                    softcap: float | None = None) -> None:
    q = rng.standard_normal((n, n_head, head_dim)).astype(np.float32)
    k_cache = np.full((ctx, n_kv_head, head_dim), np.nan, np.float32)
    v_cache = np.full((ctx, n_kv_head, head_dim), np.nan, np.float32)
    # Rows past n_past + n stay NaN: a backend that reads them produces NaN.
    k_cache[: n_past + n] = rng.standard_normal((n_past + n, n_kv_head, head_dim))
    v_cache[: n_past + n] = rng.standard_normal((n_past + n, n_kv_head, head_dim))
    # A scale that makes the scores large enough for the mask and softcap to matter.
    scale = 2.0 / np.sqrt(head_dim)
    args = [q, k_cache, v_cache, n_past, scale]
    kwargs = {"window": window, "softcap": softcap}
    expected = run(ref, "attention", args, q.shape, **kwargs)
    actual = run(be, "attention", args, q.shape, **kwargs)
    assert_within(actual, expected, np.float64(ATTENTION_RTOL * np.abs(v_cache[: n_past + n]).max()),
                  f"attention n={n} n_past={n_past} heads={n_head}/{n_kv_head} hd={head_dim} "
                  f"window={window} softcap={softcap}")


def check_gated(be, ref, rng, op: str, shape: tuple[int, ...], spread: float,
                in_place: bool) -> None:
    gate = (rng.standard_normal(shape) * spread).astype(np.float32)
    up = rng.standard_normal(shape).astype(np.float32)
    expected = run(ref, op, [gate, up], shape)
    actual = run_in_place(be, op, [gate, up]) if in_place else run(be, op, [gate, up], shape)
    assert_close(actual, expected, ELEMENTWISE_RTOL * 4, f"{op} {shape} spread={spread}")


def check_add(be, ref, rng, a_shape: tuple[int, ...], b_shape: tuple[int, ...],
              in_place: bool) -> None:
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    expected = run(ref, "add", [a, b], a_shape)
    actual = run_in_place(be, "add", [a, b]) if in_place else run(be, "add", [a, b], a_shape)
    assert_exact(actual, expected, f"add {a_shape} + {b_shape}")


def check_scale(be, ref, rng, shape: tuple[int, ...], s: float, in_place: bool) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    expected = run(ref, "scale", [x, s], shape)
    actual = run_in_place(be, "scale", [x, s]) if in_place else run(be, "scale", [x, s], shape)
    assert_exact(actual, expected, f"scale {shape} by {s}")


def check_copy_rows(be, ref, rng, n_dst: int, n_src: int, row_shape: tuple[int, ...],
                    start: int) -> None:
    src = rng.standard_normal((n_src, *row_shape)).astype(np.float32)
    dst = rng.standard_normal((n_dst, *row_shape)).astype(np.float32)
    results = []
    for b in (be, ref):
        dst_dev = b.upload(dst)
        b.copy_rows(b.upload(src), dst_dev, start)
        b.synchronize()
        results.append(b.download(dst_dev))
    assert_exact(results[0], results[1], f"copy_rows {n_src} rows into {n_dst} at {start}")

