"""Every backend refuses the same bad op arguments, with the same message (realm/op_checks.py).

One table of bad calls runs against the numpy reference and against every backend under
conformance test (the `backend` fixture: a backend listed in $REALM_REQUIRE_BACKENDS fails
rather than skips when it is missing). Each call must raise `BackendArgumentError` whose
message starts with ``"<op>: <argument> must"``, and a backend's message must be the
reference's, word for word: the checks are one piece of code, not three that drifted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from realm.backend import OPS, OPTIONAL_OPS, RopeMode
from realm.errors import BackendArgumentError, RealmError
from realm.gguf.types import GGMLType
from realm.op_checks import OpChecks
from realm.testing import random_quant_tensor

NEOX = RopeMode.NEOX


def f32(be: Any, *shape: int) -> Any:
    return be.upload(np.zeros(shape, np.float32))


def i32(be: Any, values: Any) -> Any:
    return be.upload(np.asarray(values, np.int32))


def q8(be: Any, *shape: int, name: str = "w") -> Any:
    raw = random_quant_tensor(GGMLType.Q8_0, shape, np.random.default_rng(0))
    return be.upload_quant(raw, GGMLType.Q8_0, shape, name=name)


@dataclass(frozen=True)
class Case:
    """``be.<op>(*build(be), **kwargs)`` must be refused, naming ``arg``; ``detail`` is a
    regex for what the message must say besides."""

    name: str
    op: str
    arg: str
    build: Callable[[Any], tuple]
    detail: str = ""
    kwargs: dict = field(default_factory=dict)
    same_text: bool = True  # False where the message names the backend's own array class

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"


def _rope(x: Callable, positions: Callable, n_rot: int = 8, mode: Any = NEOX,
          out: Callable | None = None) -> Callable[[Any], tuple]:
    return lambda be: (x(be), positions(be), n_rot, 10000.0, mode, (out or x)(be))


def _rope_kv(q=(2, 4, 8), k=(2, 2, 8), v=(2, 2, 8), k_pool=(8, 2, 8), v_pool=(8, 2, 8), slots=(0, 5),
             n_rot=8):
    return lambda be: (f32(be, *q), f32(be, *k), f32(be, *v), i32(be, [0, 1]), n_rot, 10000.0, NEOX,
                       f32(be, *k_pool), f32(be, *v_pool), i32(be, slots))


def _attention(q=(2, 4, 8), k=(6, 2, 8), v=(6, 2, 8), n_past=0, out=(2, 4, 8)):
    return lambda be: (f32(be, *q), f32(be, *k), f32(be, *v), n_past, 0.35, f32(be, *out))


def _paged(q=(1, 4, 8), pool=(8, 2, 8), table=((0, 1),), block_size=4, seq=(0,), pos=(5,),
           out=(1, 4, 8)):
    return lambda be: (f32(be, *q), f32(be, *pool), f32(be, *pool), i32(be, table), block_size,
                       i32(be, seq), i32(be, pos), 0.35, f32(be, *out))


CASES = [
    # matmul: x [n, k], w [m, k] (quantized or float32), out [n, m]
    Case("x-1d", "matmul", "x", lambda be: (f32(be, 32), q8(be, 4, 32), f32(be, 1, 4)),
         r"be 2-D \[n, k\], got shape \(32,\)"),
    Case("x-int32", "matmul", "x", lambda be: (i32(be, np.zeros((1, 32))), q8(be, 4, 32),
                                                f32(be, 1, 4)), "be float32, got int32"),
    Case("x-list", "matmul", "x", lambda be: ([[0.0] * 32], q8(be, 4, 32), f32(be, 1, 4)),
         r"be a float32 .*array.*, got list", same_text=False),
    Case("w-k", "matmul", "w", lambda be: (f32(be, 1, 5), f32(be, 4, 8), f32(be, 1, 4)),
         r"k=5, got shape \(4, 8\)"),
    Case("quant-w-k", "matmul", r"w 'blk\.0\.attn_q\.weight'",
         lambda be: (f32(be, 1, 64), q8(be, 4, 32, name="blk.0.attn_q.weight"), f32(be, 1, 4)),
         "k=64"),
    Case("quant-w-3d", "matmul", "w 'w'", lambda be: (f32(be, 1, 32), q8(be, 2, 2, 32), f32(be, 1, 2)),
         r"2-D table.*\(2, 2, 32\)"),
    Case("w-int32", "matmul", "w", lambda be: (f32(be, 1, 8), i32(be, np.zeros((4, 8))),
                                                f32(be, 1, 4)), "be float32, got int32"),
    Case("out-shape", "matmul", "out", lambda be: (f32(be, 1, 32), q8(be, 4, 32), f32(be, 1, 5)),
         r"have shape \(1, 4\), got shape \(1, 5\)"),
    # matmul_q16: matmul's checks, and w quantized in blocks
    Case("float-w", "matmul_q16", "w", lambda be: (f32(be, 1, 32), f32(be, 4, 32), f32(be, 1, 4)),
         "be a QuantTensor, got ", same_text=False),
    Case("f16-w", "matmul_q16", "w 'w'",
         lambda be: (f32(be, 1, 8), be.upload_quant(np.zeros(64, np.uint8), GGMLType.F16, (4, 8), name="w"),
                     f32(be, 1, 4)),
         "be quantized in blocks"),
    Case("k", "matmul_q16", r"w 'w'", lambda be: (f32(be, 1, 64), q8(be, 4, 32), f32(be, 1, 4)),
         r"be \[m, k\] with x's k=64"),
    Case("out-shape", "matmul_q16", "out", lambda be: (f32(be, 1, 32), q8(be, 4, 32), f32(be, 1, 5)),
         r"have shape \(1, 4\), got shape \(1, 5\)"),
    # matmuls_q16: 1-3 weights, each checked as matmul_q16 checks one
    Case("no-weights", "matmuls_q16", "ws", lambda be: (f32(be, 1, 32), [], []),
         "be a list of 1 to 3 weights"),
    Case("outs-count", "matmuls_q16", "outs",
         lambda be: (f32(be, 1, 32), [q8(be, 4, 32), q8(be, 2, 32)], [f32(be, 1, 4)]),
         "be a list of 2 outputs"),
    Case("second-out", "matmuls_q16", "out",
         lambda be: (f32(be, 1, 32), [q8(be, 4, 32), q8(be, 2, 32)], [f32(be, 1, 4), f32(be, 1, 4)]),
         r"have shape \(1, 2\), got shape \(1, 4\)"),
    # rms_norm_matmuls_q16: rms_norm's x and weight, then matmuls_q16's checks
    Case("weight-length", "rms_norm_matmuls_q16", "weight",
         lambda be: (f32(be, 1, 32), f32(be, 31), 1e-6, [q8(be, 4, 32)], [f32(be, 1, 4)]),
         r"have shape \(32,\)"),
    Case("out-shape", "rms_norm_matmuls_q16", "out",
         lambda be: (f32(be, 1, 32), f32(be, 32), 1e-6, [q8(be, 4, 32)], [f32(be, 1, 5)]),
         r"have shape \(1, 4\), got shape \(1, 5\)"),
    Case("no-weights", "rms_norm_matmuls_q16", "ws", lambda be: (f32(be, 1, 32), f32(be, 32), 1e-6, [], []),
         "be a list of 1 to 3 weights"),
    Case("gated-name", "rms_norm_matmuls_q16", "gated",
         lambda be: (f32(be, 1, 32), f32(be, 32), 1e-6, [q8(be, 4, 32)] * 2, [f32(be, 1, 4)] * 2),
         r"be None or one of \['geglu', 'swiglu'\], got 'relu'", {"gated": "relu"}),
    Case("gated-one-weight", "rms_norm_matmuls_q16", "ws",
         lambda be: (f32(be, 1, 32), f32(be, 32), 1e-6, [q8(be, 4, 32)], [f32(be, 1, 4)]),
         "be a gate and an up weight", {"gated": "swiglu"}),
    # rope_write_kv: q and k as rope's x, k and v as set_rows' src, slots inside the pools
    Case("k-2d", "rope_write_kv", "k", _rope_kv(k=(2, 16)), r"be 3-D \[n, heads, head_dim\]"),
    Case("n-rot", "rope_write_kv", "n_rot", _rope_kv(n_rot=9), "be even"),
    Case("v-tokens", "rope_write_kv", "v", _rope_kv(v=(1, 2, 8)), "with q's n=2"),
    Case("k-pool-shape", "rope_write_kv", "k", _rope_kv(k_pool=(8, 2, 4)), r"float32 rows of shape \(2, 4\)"),
    Case("v-pool-rows", "rope_write_kv", "v_pool", _rope_kv(v_pool=(6, 2, 8)), "have k_pool's 8 rows"),
    Case("slots-count", "rope_write_kv", "slots", _rope_kv(slots=[0]), r"have shape \(2,\)"),
    Case("slot-range", "rope_write_kv", "slots", _rope_kv(slots=[0, 8]),
         r"be in \[0, 8\) \(the pools' rows\), got 8"),
    Case("slot-repeat", "rope_write_kv", "slots", _rope_kv(slots=[3, 3]), "be distinct"),
    # get_rows: ids int32 [n] within the table's rows, table [rows, d], out [n, d]
    Case("ids-float", "get_rows", "ids",
         lambda be: (f32(be, 4, 8), be.upload(np.zeros(2, np.float32)), f32(be, 2, 8)),
         "be int32, got float32"),
    Case("ids-2d", "get_rows", "ids", lambda be: (f32(be, 4, 8), i32(be, [[0, 1]]), f32(be, 2, 8)),
         r"be 1-D \[n\]"),
    Case("id-past-end", "get_rows", "ids", lambda be: (f32(be, 4, 8), i32(be, [0, 4]), f32(be, 2, 8)),
         r"be in \[0, 4\), got 'w' \(4 rows\): id 4 at position 1, out of range"),
    Case("id-negative", "get_rows", "ids",
         lambda be: (q8(be, 4, 32, name="token_embd.weight"), i32(be, [-1]), f32(be, 1, 32)),
         r"'token_embd\.weight' \(4 rows\): id -1 at position 0"),
    Case("table-1d", "get_rows", "w", lambda be: (f32(be, 8), i32(be, [0]), f32(be, 1, 8)),
         "2-D table"),
    Case("out-shape", "get_rows", "out", lambda be: (q8(be, 4, 32), i32(be, [0, 1]), f32(be, 2, 31)),
         r"have shape \(2, 32\)"),
    # rms_norm: weight [d], out like x
    Case("weight-length", "rms_norm", "weight",
         lambda be: (f32(be, 2, 8), f32(be, 7), 1e-5, f32(be, 2, 8)), r"have shape \(8,\)"),
    Case("x-int32", "rms_norm", "x",
         lambda be: (i32(be, np.zeros((2, 8))), f32(be, 8), 1e-5, f32(be, 2, 8)), "be float32"),
    Case("out-shape", "rms_norm", "out",
         lambda be: (f32(be, 2, 8), f32(be, 8), 1e-5, f32(be, 1, 8)), r"have shape \(2, 8\)"),
    # rope: x [n, heads, head_dim], positions int32 [n], n_rot even in 1..head_dim
    Case("x-2d", "rope", "x", _rope(lambda be: f32(be, 2, 8), lambda be: i32(be, [0, 1])), "3-D"),
    Case("positions-float", "rope", "positions",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: f32(be, 2)), "be int32"),
    Case("positions-length", "rope", "positions",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: i32(be, [0, 1, 2])), r"have shape \(2,\)"),
    Case("n_rot-odd", "rope", "n_rot",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: i32(be, [0, 1]), n_rot=3),
         r"be even and in 1\.\.8 \(head_dim\), got 3"),
    Case("n_rot-zero", "rope", "n_rot",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: i32(be, [0, 1]), n_rot=0), "got 0"),
    Case("n_rot-past-head", "rope", "n_rot",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: i32(be, [0, 1]), n_rot=10), "got 10"),
    Case("mode", "rope", "mode",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: i32(be, [0, 1]), mode=1), "NEOX"),
    Case("freq_factors-length", "rope", "freq_factors",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: i32(be, [0, 1])), r"have shape \(4,\)",
         kwargs={"freq_factors": np.ones(3, np.float32)}),
    Case("out-shape", "rope", "out",
         _rope(lambda be: f32(be, 2, 4, 8), lambda be: i32(be, [0, 1]),
               out=lambda be: f32(be, 2, 4, 7)), r"have shape \(2, 4, 8\)"),
    # attention: q [n, n_head, hd], caches [ctx, n_kv_head, hd / hd_v], n_head = g * n_kv_head
    Case("q-2d", "attention", "q", _attention(q=(2, 8)), "3-D"),
    Case("k-head_dim", "attention", "k_cache", _attention(k=(6, 2, 6)), "q's head_dim 8"),
    Case("v-rows", "attention", "v_cache", _attention(v=(5, 2, 8)), r"\(6, 2\)"),
    Case("head-grouping", "attention", "q", _attention(q=(2, 3, 8), out=(2, 3, 8)),
         "a multiple of k_cache's n_kv_head 2, got n_head 3"),
    Case("n_past-negative", "attention", "n_past", _attention(n_past=-1), "n_past -1"),
    Case("n_past-past-cache", "attention", "n_past", _attention(n_past=5),
         r"the cache's 6 rows, got n_past 5 with n 2 \(7 keys\)"),
    Case("window", "attention", "window", _attention(), "got 0", kwargs={"window": 0}),
    Case("softcap", "attention", "softcap", _attention(), "got 0.0", kwargs={"softcap": 0.0}),
    Case("out-shape", "attention", "out", _attention(out=(2, 4, 7)), r"have shape \(2, 4, 8\)"),
    # swiglu / geglu: up and out like gate
    *(Case(name, op, arg, build, detail)
      for op in ("swiglu", "geglu")
      for name, arg, build, detail in (
          ("up-shape", "up", lambda be: (f32(be, 2, 8), f32(be, 2, 7), f32(be, 2, 8)),
           r"have shape \(2, 8\)"),
          ("out-shape", "out", lambda be: (f32(be, 2, 8), f32(be, 2, 8), f32(be, 8)),
           r"have shape \(2, 8\)"),
      )),
    # add: b like a, or one row of it
    Case("b-rows", "add", "b", lambda be: (f32(be, 4, 6), f32(be, 2, 6), f32(be, 4, 6)),
         "one row of 6"),
    Case("b-int32", "add", "b", lambda be: (f32(be, 4, 6), i32(be, np.zeros(6)), f32(be, 4, 6)),
         "be float32"),
    Case("out-shape", "add", "out", lambda be: (f32(be, 4, 6), f32(be, 6), f32(be, 6)),
         r"have shape \(4, 6\)"),
    # scale
    Case("x-int32", "scale", "x", lambda be: (i32(be, np.zeros(4)), 2.0, f32(be, 4)), "be float32"),
    Case("out-shape", "scale", "out", lambda be: (f32(be, 4), 2.0, f32(be, 5)), r"have shape \(4,\)"),
    # argmax_rows: x float32 [rows, d >= 1], out int32 [rows]
    Case("x-1d", "argmax_rows", "x", lambda be: (f32(be, 6), i32(be, np.zeros(6))), r"be 2-D"),
    Case("x-empty-rows", "argmax_rows", "x", lambda be: (f32(be, 2, 0), i32(be, [0, 0])), r"d >= 1"),
    Case("out-float", "argmax_rows", "out", lambda be: (f32(be, 2, 3), f32(be, 2)), "be int32"),
    Case("out-rows", "argmax_rows", "out", lambda be: (f32(be, 2, 3), i32(be, [0, 0, 0])), r"shape"),
    # count_nonfinite: x float32 [rows, d], out int32 [rows]
    Case("x-1d", "count_nonfinite", "x", lambda be: (f32(be, 6), i32(be, np.zeros(6))), r"be 2-D"),
    Case("x-int32", "count_nonfinite", "x", lambda be: (i32(be, np.zeros((2, 3))), i32(be, [0, 0])),
         "be float32"),
    Case("out-float", "count_nonfinite", "out", lambda be: (f32(be, 2, 3), f32(be, 2)), "be int32"),
    Case("out-rows", "count_nonfinite", "out", lambda be: (f32(be, 2, 3), i32(be, [0, 0, 0])),
         r"have shape \(2,\)"),
    # copy_rows: src rows of dst's dtype and trailing shape, inside dst
    Case("dtype", "copy_rows", "src",
         lambda be: (i32(be, np.zeros((1, 2, 8))), f32(be, 6, 2, 8), 0),
         r"float32 rows of shape \(2, 8\).*got int32 \(1, 2, 8\)"),
    Case("trailing-shape", "copy_rows", "src", lambda be: (f32(be, 1, 2, 4), f32(be, 6, 2, 8), 0),
         r"got float32 \(1, 2, 4\)"),
    Case("start-past-end", "copy_rows", "start", lambda be: (f32(be, 2, 2), f32(be, 6, 2), 5),
         r"rows 5\.\.7 do not fit"),
    Case("start-negative", "copy_rows", "start", lambda be: (f32(be, 2, 2), f32(be, 6, 2), -1),
         "start -1"),
    # set_rows: src rows of dst's dtype and trailing shape, one int32 row id per src row
    Case("dtype", "set_rows", "src",
         lambda be: (i32(be, np.zeros((1, 2))), f32(be, 6, 2), i32(be, [0])),
         r"float32 rows of shape \(2,\).*got int32 \(1, 2\)"),
    Case("rows-count", "set_rows", "rows", lambda be: (f32(be, 2, 2), f32(be, 6, 2), i32(be, [0])),
         r"have shape \(2,\)"),
    Case("rows-range", "set_rows", "rows",
         lambda be: (f32(be, 2, 2), f32(be, 6, 2), i32(be, [0, 6])), r"be in \[0, 6\)"),
    # attention_paged: q [n, heads, hd], pools [slots, kv_heads, hd], int32 table / ids / positions
    Case("heads", "attention_paged", "q", _paged(q=(1, 3, 8), out=(1, 3, 8)),
         "multiple of k_pool's n_kv_head 2"),
    Case("block-size", "attention_paged", "block_size", _paged(block_size=3),
         "divide k_pool's 8 rows"),
    Case("seq-ids", "attention_paged", "seq_ids", _paged(seq=[1]), r"be in \[0, 1\)"),
    Case("positions", "attention_paged", "positions", _paged(pos=[8]), r"be in \[0, 8\)"),
    Case("block-id", "attention_paged", "block_table", _paged(table=[[0, 2]]), r"in \[0, 2\)"),
    # dequantize
    Case("out-shape", "dequantize", "out", lambda be: (q8(be, 4, 32), f32(be, 4, 31)),
         r"have shape \(4, 32\)"),
    Case("w-array", "dequantize", "w", lambda be: (f32(be, 4, 32), f32(be, 4, 32)),
         "be a QuantTensor, got ", same_text=False),
]


def refusal(be: Any, case: Case) -> str:
    """Run the case's call on `be`; return the refusal's message after checking its form."""
    args = case.build(be)
    kwargs = {k: be.upload(v) if isinstance(v, np.ndarray) else v for k, v in case.kwargs.items()}
    with pytest.raises(BackendArgumentError) as info:
        getattr(be, case.op)(*args, **kwargs)
    assert isinstance(info.value, RealmError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert re.match(rf"{case.op}: {case.arg} must ", message), message
    assert re.search(case.detail, message), message
    return message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reference_refuses(reference, case):
    refusal(reference, case)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_backend_refuses_like_the_reference(backend, reference, case):
    if case.op in OPTIONAL_OPS and not backend.supports(case.op):
        return  # an optional op the backend does not offer: nothing to refuse
    message = refusal(backend, case)
    if case.same_text:
        assert message == refusal(reference, case)


def test_every_op_has_cases():
    # compile_step takes recorded calls, not arrays: it refuses what each call's op refuses
    # (tests/test_step_program.py).
    assert {c.op for c in CASES} == (set(OPS) | set(OPTIONAL_OPS)) - {"compile_step"}
    assert len({c.id for c in CASES}) == len(CASES)


def test_contiguity_is_each_backends_choice():
    """Strided views pass where the backend says its kernels cope, and are refused otherwise."""
    x = np.zeros((4, 8), np.float32)
    strided = np.zeros((4, 16), np.float32)[:, ::2]
    OpChecks(np.ndarray, "numpy array").scale(strided, strided)
    OpChecks(np.ndarray, "numpy array", contiguous_outputs=True).scale(strided, x)
    with pytest.raises(BackendArgumentError, match=r"^scale: out must be C-contiguous"):
        OpChecks(np.ndarray, "numpy array", contiguous_outputs=True).scale(x, strided)
    with pytest.raises(BackendArgumentError, match=r"^scale: x must be C-contiguous"):
        OpChecks(np.ndarray, "numpy array", contiguous_inputs=True).scale(strided, x)
    # dequantize writes flat rows on every backend, whatever it says about other outputs.
    from realm_numpy import NumpyBackend

    be = NumpyBackend()
    w = q8(be, 4, 32)
    with pytest.raises(BackendArgumentError, match=r"^dequantize: out must be C-contiguous"):
        be.dequantize(w, np.zeros((4, 64), np.float32)[:, ::2])


def test_what_the_model_passes_is_accepted():
    """The shapes the model layer relies on: one-row bias, [1, d] rows, in-place ops,
    a value head size apart from the key's, windows, soft-capping, empty batches."""
    checks = OpChecks(np.ndarray, "numpy array", contiguous_outputs=True)
    a = np.zeros((3, 6), np.float32)
    for b in (a, np.zeros(6, np.float32), np.zeros((1, 6), np.float32)):
        checks.add(a, b, a)
    q = np.zeros((2, 4, 8), np.float32)
    checks.attention(q, np.zeros((6, 2, 8), np.float32), np.zeros((6, 2, 4), np.float32), 4,
                     np.zeros((2, 4, 4), np.float32), window=3, softcap=50.0)
    checks.rope(q, np.zeros(2, np.int32), 4, NEOX, q, np.ones(2, np.float32))
    checks.rms_norm(q, np.ones(8, np.float32), q)
    checks.copy_rows(np.zeros((0, 2), np.float16), np.zeros((3, 2), np.float16), 3)
    checks.get_rows(np.zeros((4, 6), np.float32), np.zeros(0, np.int32), np.zeros((0, 6), np.float32))
