"""Row-wise and element-wise ops: rms_norm, rope, swiglu, geglu, add, scale, copy_rows,
count_nonfinite, argmax_rows.

These touch each activation once, so they run single-threaded: at decode sizes a
parallel region would cost more than the work. Arrays arrive as C-contiguous 2-D
views (the backend reshapes). Every kernel reads what it needs before writing, so
``out`` may alias an input (the model normalises, ropes and adds in place).

In-place calls are the common case, and LLVM's vectorizer guards each loop with a
run-time overlap check that an aliased ``out`` fails, sending it down the scalar loop
(14x slower for geglu). So when ``out`` is an input, results go to a small scratch
first and are then copied to ``out``: the scratch never overlaps an input, and the copy
is a plain vector move. A separate ``out`` is written directly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from realm_numba.scalars import JIT, JIT_FAST, exp_f32

# ggml's tanh-GELU constants (ggml-cpu/vec.h), as the reference uses them.
GELU_COEF_A = np.float32(0.044715)
SQRT_2_OVER_PI = np.float32(0.79788456080286535587989211986876)

CHUNK = 1024  # flat elements per scratch round: 4 KiB, stays in L1

# Element-wise kernels need no reassociation (there is no reduction), and must keep the
# order of the range reduction inside exp_f32: only contraction and signed-zero freedom.
_JIT_ELEMENTWISE = {**JIT, "fastmath": {"contract", "nsz"}}


@njit(**JIT)
def _same(a, b):
    """Whether two arrays start at the same address (an in-place call)."""
    return a.ctypes.data == b.ctypes.data


@njit(**_JIT_ELEMENTWISE)
def rms_norm(x, weight, eps, out):
    """``out[r] = x[r] / sqrt(mean(x[r]**2) + eps) * weight`` for each row of ``x [rows, d]``.

    Only the sum of squares may be reordered (`_sum_squares`). The scaling is not: with
    reassociation, LLVM's vector loop and the scalar loop it falls back to when a run-time
    check finds ``out`` close to an input in memory may group the two products differently,
    and a row's bits would then depend on where its buffers were allocated.
    """
    rows, d = x.shape
    tmp = np.empty(d, dtype=np.float32)
    in_place = _same(out, x)
    for r in range(rows):
        xr = x[r]
        inv_rms = np.float32(1.0) / np.sqrt(_sum_squares(xr) / np.float32(d) + eps)
        o = out[r]
        dst = tmp if in_place else o
        for i in range(d):
            dst[i] = (xr[i] * inv_rms) * weight[i]
        if in_place:
            for i in range(d):
                o[i] = tmp[i]


@njit(**JIT_FAST)
def _sum_squares(x):
    """``sum(x**2)`` in float32, vectorized (the order of the sum is LLVM's, fixed per build)."""
    ss = np.float32(0.0)
    for i in range(x.shape[0]):
        ss += x[i] * x[i]
    return ss


@njit(**JIT)
def rope(x, positions, n_rot, base, neox, freq_factors, has_freq_factors, freq_scale, out):
    """Rotate the first ``n_rot`` dims of every head of ``x [n, heads, head_dim]``.

    Pair ``i`` turns by ``pos * freq_scale * base**(-2i/n_rot) / freq_factors[i]``, computed
    in float32 in the reference's order. NEOX pairs ``(i, i + n_rot/2)``, NORMAL ``(2i, 2i+1)``.
    """
    inv_freq = rope_frequencies(n_rot, base, freq_factors, has_freq_factors, freq_scale)
    cos = np.empty(n_rot // 2, dtype=np.float32)
    sin = np.empty(n_rot // 2, dtype=np.float32)
    for t in range(x.shape[0]):
        rope_angles(positions[t], inv_freq, cos, sin)
        rotate_heads(x[t], n_rot, neox, cos, sin, out[t])


@njit(**JIT)
def rope_frequencies(n_rot, base, freq_factors, has_freq_factors, freq_scale):
    """Each pair's turn per position: ``freq_scale * base**(-2i/n_rot) / freq_factors[i]``."""
    half = n_rot // 2
    inv_freq = np.empty(half, dtype=np.float32)
    for i in range(half):
        exponent = np.float32(2 * i) / np.float32(n_rot)
        f = base ** -exponent
        if has_freq_factors:
            f = f / freq_factors[i]
        inv_freq[i] = freq_scale * f
    return inv_freq


@njit(**JIT)
def rope_angles(position, inv_freq, cos, sin):
    """The cosines and sines of a token's pairs at ``position``."""
    pos = np.float32(position)
    for i in range(inv_freq.shape[0]):
        theta = pos * inv_freq[i]
        cos[i] = math.cos(theta)
        sin[i] = math.sin(theta)


@njit(**JIT)
def rotate_heads(x, n_rot, neox, cos, sin, out):
    """One token's heads ``x [heads, head_dim]`` turned by its angles into ``out`` (may be ``x``)."""
    heads, head_dim = x.shape
    half = n_rot // 2
    for h in range(heads):
        xh = x[h]
        oh = out[h]
        for i in range(half):
            a_at = i if neox else 2 * i
            b_at = i + half if neox else 2 * i + 1
            a = xh[a_at]
            b = xh[b_at]
            oh[a_at] = a * cos[i] - b * sin[i]
            oh[b_at] = a * sin[i] + b * cos[i]
        for i in range(n_rot, head_dim):
            oh[i] = xh[i]


@njit(**_JIT_ELEMENTWISE)
def swiglu(gate, up, out):
    """``out = gate / (1 + exp(-gate)) * up`` over flat float32 arrays."""
    tmp = np.empty(CHUNK, dtype=np.float32)
    in_place = _same(out, gate) or _same(out, up)
    for start in range(0, gate.shape[0], CHUNK):
        size = min(CHUNK, gate.shape[0] - start)
        gs = gate[start:start + size]  # views: plain indices keep the loop vectorizable
        us = up[start:start + size]
        os = out[start:start + size]
        dst = tmp if in_place else os
        for i in range(size):
            g = gs[i]
            dst[i] = g / (np.float32(1.0) + exp_f32(-g)) * us[i]
        if in_place:
            for i in range(size):
                os[i] = tmp[i]


@njit(**_JIT_ELEMENTWISE)
def geglu(gate, up, out):
    """``out = 0.5 * g * (1 + tanh(z)) * up``, ``z = sqrt(2/pi) * g * (1 + 0.044715 * g**2)``.

    Evaluated as ``g / (1 + exp(-2z)) * up``: the same function (``1 + tanh(z)`` is
    ``2 / (1 + exp(-2z))``), without tanh's cancellation for very negative ``z``.
    """
    tmp = np.empty(CHUNK, dtype=np.float32)
    in_place = _same(out, gate) or _same(out, up)
    for start in range(0, gate.shape[0], CHUNK):
        size = min(CHUNK, gate.shape[0] - start)
        gs = gate[start:start + size]  # views: plain indices keep the loop vectorizable
        us = up[start:start + size]
        os = out[start:start + size]
        dst = tmp if in_place else os
        for i in range(size):
            g = gs[i]
            z = SQRT_2_OVER_PI * g * (np.float32(1.0) + GELU_COEF_A * g * g)
            dst[i] = g / (np.float32(1.0) + exp_f32(np.float32(-2.0) * z)) * us[i]
        if in_place:
            for i in range(size):
                os[i] = tmp[i]


@njit(**JIT)
def add(a, b, out):
    """``out = a + b`` for ``a [rows, d]`` and ``b`` either ``[rows, d]`` or ``[1, d]`` (broadcast)."""
    rows, d = a.shape
    broadcast = b.shape[0] == 1
    tmp = np.empty(d, dtype=np.float32)
    in_place = _same(out, a) or _same(out, b)
    for r in range(rows):
        ar = a[r]
        br = b[0] if broadcast else b[r]
        o = out[r]
        dst = tmp if in_place else o
        for i in range(d):
            dst[i] = ar[i] + br[i]
        if in_place:
            for i in range(d):
                o[i] = tmp[i]


@njit(**JIT)
def scale(x, s, out):
    """``out = x * s`` over flat float32 arrays (``s`` already float32: one rounding)."""
    for i in range(x.shape[0]):
        out[i] = x[i] * s


@njit(**JIT)
def copy_rows(src, dst, start):
    """``dst[start:start + len(src)] = src`` over flat row views ``[rows, row_elems]``."""
    for r in range(src.shape[0]):
        for i in range(src.shape[1]):
            dst[start + r, i] = src[r, i]


_EXPONENT = np.uint32(0x7F800000)  # float32's exponent bits: all set for NaN and the infinities


@njit(**JIT)
def count_nonfinite(x, out):
    """``out[r]`` = how many of row ``r``'s values are NaN or infinite (``x [rows, d]`` float32):
    those whose exponent bits are all set. A mask, a compare and an add per value, which
    LLVM vectorizes."""
    bits = x.view(np.uint32)
    for r in range(bits.shape[0]):
        row = bits[r]
        n = 0
        for i in range(row.shape[0]):
            n += (row[i] & _EXPONENT) == _EXPONENT
        out[r] = n


# argmax_rows compares floats as int32 keys: a float's magnitude bits, negated for a
# negative sign. Their order is the floats' order, -0.0 and +0.0 share the key 0 (they are
# equal), and LLVM vectorizes an integer maximum (vpmaxsd), which it does not do for a
# float maximum with NaN's rules. A row is scanned in chunks of `ARGMAX_CHUNK` values: the
# first chunk holding the largest key, then the first value in it with that key.
ARGMAX_CHUNK = 256
_MAGNITUDE = np.int32(0x7FFFFFFF)
_INF_BITS = np.int32(0x7F800000)  # a magnitude above this is a NaN
_LOWEST = np.int32(-(2**31))


@njit(**{**JIT, "inline": "always"})
def _order_key(b):
    """The int32 key of a float32 whose bits are ``b`` (for anything but NaN)."""
    sign = np.int32(b >> np.int32(31))  # 0 or -1
    return np.int32(np.int32(np.int32(b & _MAGNITUDE) ^ sign) - sign)


@njit(**JIT)
def _argmax_row(x):
    bits = x.view(np.int32)
    d = x.shape[0]
    best, best_chunk, top = _LOWEST, 0, np.int32(0)
    for c0 in range(0, d, ARGMAX_CHUNK):
        high, magnitude = _LOWEST, np.int32(0)
        for i in range(c0, min(c0 + ARGMAX_CHUNK, d)):
            magnitude = max(magnitude, np.int32(bits[i] & _MAGNITUDE))
            high = max(high, _order_key(bits[i]))
        top = max(top, magnitude)
        if high > best:  # strictly: the first chunk holding the maximum
            best, best_chunk = high, c0
    if top > _INF_BITS:  # numpy's argmax stops at the first NaN
        for i in range(d):
            if x[i] != x[i]:
                return i
    for i in range(best_chunk, min(best_chunk + ARGMAX_CHUNK, d)):
        if _order_key(bits[i]) == best:
            return i
    return 0  # not reached: the chunk holds its maximum


@njit(**JIT)
def argmax_rows(x, out):
    """``out[r]`` = ``np.argmax(x[r])`` for ``x [rows, d]`` float32: the first maximum, or the
    first NaN where a row has one. One vectorized pass over each row (see `_order_key`)."""
    for r in range(x.shape[0]):
        out[r] = _argmax_row(x[r])
