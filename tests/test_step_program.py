"""Step programs (`compile_step`): a recorded pass run in one go equals its calls one by one.

The definition is `realm.step_program.run_calls`; a backend's program must give the same
bits on every array the calls write, with each run's index arrays put in place of the
recorded ones. Then the model: a pass through a program equals the same pass op by op,
for every family's optional parts (biases, Q/K norms, post norms, windows, soft-caps).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import realm
from realm.backend import RopeMode
from realm.errors import BackendArgumentError, CallOrderError
from realm.gguf.types import GGMLType
from realm.model.passes import Batch
from realm.op_checks import check_paged_indices
from realm.step_program import OpCall, StepRecorder, run_calls
from realm.testing import random_quant_tensor, write_model

K, N_HEAD, N_KV, HEAD_DIM, BLOCK, N_SLOTS = 64, 4, 2, 16, 4, 32
N_TOKENS = 40  # rows of the embedding tables


def _needs_programs(backend) -> None:
    if not backend.supports("compile_step"):
        pytest.skip(f"backend {backend.name!r} runs passes op by op (compile_step is optional)")


class Pass:
    """A small layer's buffers on a backend, and the calls of one pass over ``n`` tokens."""

    def __init__(self, be, rng, n: int) -> None:
        self.be, self.n = be, n

        def floats(*shape):
            return be.upload(rng.standard_normal(shape).astype(np.float32))

        def quant(qtype, m, k=K):
            raw = random_quant_tensor(qtype, (m, k), rng)
            return be.upload_quant(raw, qtype, (m, k), name=f"w_{qtype.name}")

        self.x, self.norm, self.bias = floats(n, K), floats(K), floats(K)
        self.q, self.k, self.v = (
            floats(n, N_HEAD * HEAD_DIM),
            floats(n, N_KV * HEAD_DIM),
            floats(n, N_KV * HEAD_DIM),
        )
        self.k_pool, self.v_pool = floats(N_SLOTS, N_KV, HEAD_DIM), floats(N_SLOTS, N_KV, HEAD_DIM)
        self.attn, self.gate, self.up = floats(n, N_HEAD * HEAD_DIM), floats(n, 96), floats(n, 96)
        self.proj, self.logits = floats(n, K), floats(n, 40)
        self.freqs = be.upload(rng.uniform(1.0, 4.0, HEAD_DIM // 2).astype(np.float32))
        q16 = [t for t in (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_1) if be.supports("matmul_q16", t)]
        rows = (N_HEAD * HEAD_DIM, N_KV * HEAD_DIM, N_KV * HEAD_DIM)
        self.w_qkv = [quant(t, m) for t, m in zip(q16, rows[: len(q16)], strict=True)]
        self.w_up = quant(GGMLType.F16, 96)
        self.w_down = quant(GGMLType.Q8_0 if q16 else GGMLType.F16, K, 96)
        self.w_f32 = quant(GGMLType.F32, 96)
        w_array = rng.standard_normal((40, K)).astype(np.float32)
        w_array[5, 7] = np.nan  # one logit per row is NaN: count_nonfinite has something to count
        self.w_array = be.upload(w_array)
        self.embd = quant(GGMLType.Q8_0, N_TOKENS)
        self.rows_f32, self.rows_array = floats(n, K), floats(n, K)
        self.writes = [self.x, self.q, self.k, self.v, self.k_pool, self.v_pool, self.attn]
        self.writes += [self.gate, self.up, self.proj, self.logits, self.rows_f32, self.rows_array]
        self.counts = be.upload(np.full(n, -7, np.int32)) if be.supports("count_nonfinite") else None
        if self.counts is not None:
            self.writes.append(self.counts)
        self.picks = be.upload(np.full(n, -7, np.int32)) if be.supports("argmax_rows") else None
        if self.picks is not None:
            self.writes.append(self.picks)
        self.initial = [be.download(a) for a in self.writes]

    def describe(self, be, positions, seq_ids, table, slots, ids) -> None:
        """One pass's calls on ``be`` (a recorder or the backend): every step op, every matmul
        and get_rows path."""
        n = self.n
        be.get_rows(self.embd, ids, self.x)
        be.get_rows(self.w_f32, ids, self.rows_f32)
        be.get_rows(self.w_array, ids, self.rows_array)
        be.rms_norm(self.x, self.norm, 1e-5, self.x)
        if self.w_qkv:
            be.matmuls_q16(self.x, self.w_qkv, [self.q, self.k, self.v])
            be.matmul_q16(self.x, self.w_qkv[1], self.k)
        q3 = self.q.reshape(n, N_HEAD, HEAD_DIM)
        k3, v3 = self.k.reshape(n, N_KV, HEAD_DIM), self.v.reshape(n, N_KV, HEAD_DIM)
        be.rms_norm(q3, self.norm[:HEAD_DIM], 1e-6, q3)
        be.rope(q3, positions, HEAD_DIM, 10000.0, RopeMode.NEOX, q3, freq_factors=self.freqs, freq_scale=0.5)
        be.rope(k3, positions, HEAD_DIM // 2, 500.0, RopeMode.NORMAL, k3)
        be.set_rows(k3, self.k_pool, slots)
        be.set_rows(v3, self.v_pool, slots)
        be.attention_paged(q3, self.k_pool, self.v_pool, table, BLOCK, seq_ids, positions, 0.25,
                           self.attn.reshape(n, N_HEAD, HEAD_DIM), window=3, softcap=20.0)  # fmt: skip
        be.matmul(self.x, self.w_up, self.up)
        be.matmul(self.x, self.w_f32, self.gate)
        be.swiglu(self.gate, self.up, self.gate)
        be.geglu(self.up, self.gate, self.up)
        be.matmul(self.gate, self.w_down, self.proj)
        be.add(self.x, self.proj, self.x)
        be.add(self.x, self.bias, self.x)
        be.scale(self.x, 0.5, self.proj)
        be.matmul(self.proj, self.w_array, self.logits)
        if self.counts is not None:
            be.count_nonfinite(self.logits, self.counts)
        if self.picks is not None:  # of the FFN's rows: the logits have a NaN column
            be.argmax_rows(self.up, self.picks)

    def reset(self) -> None:
        for host, array in zip(self.initial, self.writes, strict=True):
            self.be.copy_rows(self.be.upload(host), array, 0)

    def results(self) -> list[np.ndarray]:
        return [self.be.download(a) for a in self.writes]

    def result_of(self, results: list[np.ndarray], array) -> np.ndarray:
        """``array``'s entry of ``results``."""
        return results[next(i for i, a in enumerate(self.writes) if a is array)]


def _inputs(rng, n: int, width: int, n_seqs: int = 2) -> list[np.ndarray]:
    """positions, seq_ids, a block table of ``width`` blocks for each of ``n_seqs`` sequences,
    slots, token ids: host arrays, as a program's run takes them."""
    seq_ids = np.sort(rng.integers(0, n_seqs, n)).astype(np.int32)
    positions = np.zeros(n, np.int32)
    table = rng.permutation(N_SLOTS // BLOCK)[: n_seqs * width].reshape(n_seqs, width).astype(np.int32)
    for s in range(n_seqs):
        mine = np.flatnonzero(seq_ids == s)
        positions[mine] = rng.integers(0, width * BLOCK - len(mine) + 1) + np.arange(len(mine))
    slots = table[seq_ids, positions // BLOCK] * BLOCK + positions % BLOCK
    ids = rng.integers(0, N_TOKENS, n).astype(np.int32)
    return [positions, seq_ids, table, slots.astype(np.int32), ids]


@pytest.mark.parametrize("n", [1, 5])
def test_a_program_gives_its_calls_bits_with_each_runs_inputs(backend, rng, n):
    _needs_programs(backend)
    p = Pass(backend, rng, n)
    recorded = [backend.upload(a) for a in _inputs(rng, n, width=2)]
    recorder = StepRecorder(backend)
    p.describe(recorder, *recorded)
    program = backend.compile_step(recorder.calls, recorded)
    outcomes = []
    # Each run's own indices; the block table wider than recorded, then with one row or three
    # (one program serves a pass of n tokens from any number of sequences).
    for width, n_seqs in ((2, 2), (3, 2), (4, 2), (3, 1), (2, 3)):
        now = _inputs(rng, n, width, n_seqs)
        p.reset()
        run_calls(backend, recorder.calls, recorded, now)
        expected = p.results()
        p.reset()
        program.run(now)
        for i, (got, want) in enumerate(zip(p.results(), expected, strict=True)):
            np.testing.assert_array_equal(got, want, err_msg=f"array {i}, table {n_seqs} x {width}")
        outcomes.append(expected)
    # The runs' inputs mattered: a program that kept the recorded indices would fail above.
    assert not np.array_equal(outcomes[0][4], outcomes[1][4])  # k_pool: written at other slots
    assert not np.array_equal(outcomes[0][6], outcomes[1][6])  # attention read other positions
    assert not np.array_equal(outcomes[0][11], outcomes[1][11], equal_nan=True)  # get_rows read other rows
    if p.counts is not None:  # the counts were written: the one NaN column of each row
        assert p.result_of(outcomes[0], p.counts).tolist() == [1] * n
    if p.picks is not None:  # and each row's argmax of the FFN's up rows, as the pass left them
        for out in outcomes:
            picks, up = p.result_of(out, p.picks), p.result_of(out, p.up)
            assert picks.tolist() == np.argmax(up.reshape(n, -1), axis=1).tolist()


def test_programs_check_their_inputs_as_the_ops_do(backend, rng):
    _needs_programs(backend)
    p = Pass(backend, rng, 3)
    host = _inputs(rng, 3, width=2)
    recorded = [backend.upload(a) for a in host]
    recorder = StepRecorder(backend)
    p.describe(recorder, *recorded)
    program = backend.compile_step(recorder.calls, recorded)
    positions, seq_ids, table, slots, ids = host

    with pytest.raises(BackendArgumentError, match="input 0 must be C-contiguous int32 of shape"):
        program.run([positions.astype(np.int64), *host[1:]])
    with pytest.raises(BackendArgumentError, match="input 3 must be C-contiguous int32 of shape"):
        program.run([*host[:3], slots[:2], ids])
    with pytest.raises(BackendArgumentError, match="input 4 must be C-contiguous int32 of shape"):
        program.run([*host[:4], np.zeros(6, np.int32)[::2]])
    with pytest.raises(BackendArgumentError, match="5 inputs"):
        program.run(host[:3])
    bad = slots.copy()
    bad[1] = N_SLOTS + 7
    with pytest.raises(BackendArgumentError, match=rf"set_rows.*rows.*{N_SLOTS + 7} at position 1"):
        program.run([*host[:3], bad, ids])
    with pytest.raises(BackendArgumentError, match="set_rows.*distinct"):
        program.run([*host[:3], np.full(3, slots[0], np.int32), ids])
    bad_ids = ids.copy()
    bad_ids[2] = N_TOKENS
    with pytest.raises(BackendArgumentError, match=rf"get_rows.*w_Q8_0.*id {N_TOKENS} at position 2"):
        program.run([*host[:4], bad_ids])
    bad_seq = seq_ids.copy()
    bad_seq[0] = 9
    with pytest.raises(BackendArgumentError, match="seq_ids"):
        program.run([positions, bad_seq, *host[2:]])
    program.run(host)  # a refused run leaves the program usable


def test_a_call_a_program_cannot_hold_is_refused(backend, rng):
    _needs_programs(backend)
    recorder = StepRecorder(backend)
    with pytest.raises(CallOrderError, match="'dequantize' cannot be part of a recorded step"):
        recorder.dequantize(None, None)
    x = backend.upload(np.ones((2, K), np.float32))
    with pytest.raises(BackendArgumentError, match="'download' is not a step op"):
        backend.compile_step([OpCall("download", (x,))], [])
    with pytest.raises(BackendArgumentError, match="rms_norm"):  # the op's own shape check
        backend.compile_step([OpCall("rms_norm", (x, backend.upload(np.ones(3, np.float32)), 1e-5, x))], [])


# ----------------------------------------------------------------------------- the model

FAMILIES = {
    "llama-q4_0": dict(arch="llama", qtype=GGMLType.Q4_0, rope_freq_factors=True),
    "qwen2-q8_0-biases": dict(arch="qwen2", qtype=GGMLType.Q8_0),
    "qwen3-f16-qk-norm": dict(arch="qwen3", qtype=GGMLType.F16),
    "gemma3-q6_k-window": dict(arch="gemma3", qtype=GGMLType.Q6_K, n_embd=256, n_ff=512),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_pass_through_a_program_equals_it_op_by_op(tmp_path, family):
    path = write_model(tmp_path / f"{family}.gguf", **FAMILIES[family])
    model = realm.load(path, device="cpu")
    t = model.transformer
    assert t._compiles_steps

    def run_steps(rng_ids: np.random.Generator) -> list[tuple]:
        """Passes of one sequence, then two sequences in one batch: each pass's `forward`, then
        the same pass again through `forward_greedy`."""
        a, b = t.cache.pool.new_sequence([], share=False), t.cache.pool.new_sequence([], share=False)
        ids = rng_ids.integers(0, t.cfg.n_vocab, 40).tolist()
        logits = []
        # A prompt chunk whose logits nobody needs yet, the rest of it, decodes, another prompt.
        passes = [(a, ids[:6], 0), (a, ids[6:9], 3), (a, ids[9:10], 1), (a, ids[10:11], 1)]
        passes.append((b, ids[11:30], 19))
        for table, chunk, n_logits in passes:
            t.cache.pool.reserve(table, table.n_tokens + len(chunk))
            batch = Batch.one_sequence(table, chunk, n_logits)
            logits += [t.forward(batch), t.forward_greedy(batch)]
            t.cache.pool.commit(table, table.n_tokens + len(chunk), chunk)
        for table in (a, b):
            t.cache.pool.reserve(table, table.n_tokens + 1)
        positions = np.array([a.n_tokens, b.n_tokens], np.int32)
        batch = Batch(ids[30:32], positions, np.array([0, 1], np.int32), [a, b], 2)
        logits += [t.forward(batch), t.forward_greedy(batch)]
        t.cache.pool.free(a)
        t.cache.pool.free(b)
        return logits

    results = {}
    for programs in (True, False):
        t._compiles_steps = programs
        results[programs] = run_steps(np.random.default_rng(7))
    # The passes above did run as programs: layers, final norm and output projection, and
    # for forward_greedy the rows' argmax.
    sizes = (1, 2, 3, 19)
    both = [("forward", n, n, greedy) for n in sizes for greedy in (False, True)]
    assert set(t._programs) == {("forward", 6, 0, False), *both}
    for i, ((got, got_finite), (want, want_finite)) in enumerate(zip(*results.values(), strict=True)):
        np.testing.assert_array_equal(got, want, err_msg=f"pass {i}")
        assert got_finite.tolist() == want_finite.tolist() == [True] * len(want), f"pass {i}"
    for i in range(0, len(results[True]), 2):  # each forward_greedy gave its forward's argmax
        (logits, _), (picks, _) = results[True][i : i + 2]
        assert picks.dtype == np.int64 and picks.tolist() == np.argmax(logits, axis=1).tolist(), f"pass {i}"


def test_eval_through_the_forward_program_equals_it_op_by_op(tmp_path):
    """`eval`'s last chunk (logits of its last token only) runs the layers and the projection
    as one program: the same logits, bit for bit, and the same sequence after it."""
    model = realm.load(write_model(tmp_path / "m.gguf", rope_freq_factors=True), device="cpu")
    t = model.transformer
    ids = np.random.default_rng(3).integers(0, t.cfg.n_vocab, 12).tolist()
    results = {}
    for programs in (True, False):
        t._compiles_steps = programs
        t.reset()
        results[programs] = [t.eval(ids[:9]), t.eval(ids[9:10]), t.eval(ids[10:])]
        assert t.tokens == ids
    # eval did run programs: the engine's own for these sizes (its logits, not picks)
    assert set(t._programs) == {("forward", n, 1, False) for n in (9, 1, 2)}
    for got, want in zip(results[True], results[False], strict=True):
        assert got.shape == (1, t.cfg.n_vocab)
        np.testing.assert_array_equal(got, want)


def test_the_model_keeps_its_most_recently_used_programs(tmp_path, monkeypatch):
    """An engine's passes come in many sizes: the programs kept are bounded, oldest use out first."""
    import realm.model.transformer as transformer

    monkeypatch.setattr(transformer, "STEP_PROGRAMS_KEPT", 2)
    model = realm.load(write_model(tmp_path / "m.gguf"), device="cpu")
    t = model.transformer
    seen = []
    for n in (3, 4, 3, 5, 4):
        t.reset()
        t.eval(list(range(1, n + 1)))
        seen.append(sorted(key[1] for key in t._programs))
    assert seen == [[3], [3, 4], [3, 4], [3, 5], [4, 5]]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda n_seqs: st.tuples(
            arrays(np.int32, (n_seqs, 3), elements=st.integers(-2, 9)),  # block ids; 8 blocks exist
            arrays(np.int32, st.integers(1, 4), elements=st.integers(-1, n_seqs)),  # seq_ids
            st.lists(st.integers(-1, 13), min_size=4, max_size=4),  # positions (block size 4)
        )
    )
)
def test_the_cpu_programs_compiled_index_check_agrees_with_the_ops(indices):
    """The cpu program checks a step's paged indices in compiled code; a bad index still gets
    attention_paged's own error, and a good one passes both ways."""
    pytest.importorskip("numba")
    from realm_numba.step_kernel import paged_indices_valid

    table, seq_ids, positions = indices
    positions = np.array(positions[: len(seq_ids)], np.int32)
    try:
        check_paged_indices(table, 4, 32, seq_ids, positions)
        valid = True
    except BackendArgumentError:
        valid = False
    assert paged_indices_valid(table, 4, 32, seq_ids, positions) == valid
