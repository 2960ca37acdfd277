"""The engine's scheduling on a stand-in model whose next token is known: the last one + 1.

The stand-in's logits for a token depend only on that token, so every expected output is
known in advance, and the tests see exactly what each step ran (chunked prefill, decode
tokens never stalled, preemption and recompute, pool-full policies, cancellation).
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from fuzzing import FUZZ_EXAMPLES, FUZZ_SETTINGS
from hypothesis import given, settings
from hypothesis import strategies as st

from realm.engine.blocks import BlockPool, PoolFullError
from realm.engine.engine import Engine
from realm.engine.request import Request
from realm.errors import ContextOverflowError, InvalidParameterError, ModelBusyError, NumericalError
from realm.generate import SamplingParams

VOCAB = 50
END = 49  # the end-of-generation token
GREEDY = SamplingParams(temperature=0)


class Counting:
    """Stand-in model: after token t comes t + 1 (so after 48 comes the end token)."""

    def __init__(self, n_ctx=256, n_batch=16, n_blocks=64, block_size=4, poison=None):
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.cfg = type("Config", (), {"n_vocab": VOCAB})()
        self.cache = type("Cache", (), {})()
        self.cache.pool = BlockPool(n_blocks, block_size)
        self.lock = threading.RLock()
        self.hooks = {}
        self.poison = poison  # a token whose logits come out NaN
        self.steps = []  # per step: [(sequence index, position, token)] in batch order
        self.gate = threading.Event()  # cleared: steps wait (to line requests up)
        self.gate.set()
        self.entered = threading.Event()  # set when a step starts
        self.greedy_steps = 0  # steps run through forward_greedy
        self.released = []  # the threads release_caller_threads was called on

    def forward(self, batch):
        self.entered.set()
        self.gate.wait()
        for i, table in enumerate(batch.tables):  # the engine reserved blocks for every position it runs
            last = int(batch.positions[batch.seq_ids == i].max())
            assert len(table.blocks) * self.cache.pool.block_size > last
        self.steps.append(list(zip(batch.seq_ids.tolist(), batch.positions.tolist(), batch.ids, strict=True)))
        tail = batch.ids[len(batch.ids) - batch.n_logits :]
        logits = np.zeros((len(tail), VOCAB), np.float32)
        for row, token in enumerate(tail):
            logits[row, (token + 1) % VOCAB] = 10.0
            if token == self.poison:
                logits[row] = np.nan
        return logits, np.isfinite(logits).all(axis=1)

    def forward_greedy(self, batch):
        self.greedy_steps += 1
        logits, finite = self.forward(batch)
        return np.argmax(logits, axis=1), finite

    def release_caller_threads(self):
        self.released.append(threading.get_ident())

    def pass_open_in_this_thread(self):
        return False

    def nonfinite_error(self, batch):
        return NumericalError("NaN in the stand-in")


class Tokens:
    eot_ids = {END}

    def token_to_bytes(self, token, special=False):
        return f"<{token}>".encode()


def engine(**kw) -> tuple[Engine, Counting]:
    engine_kw = {k: kw.pop(k) for k in ("n_seq_max", "max_waiting") if k in kw}
    model = Counting(**kw)
    return Engine(model, Tokens(), **engine_kw), model


def run(eng: Engine, ids, max_tokens=5, **kw):
    handle = eng.submit(Request(list(ids), GREEDY, max_tokens, **kw))
    handle.result()
    return handle


def test_generation_stops_at_the_end_token_and_at_max_tokens():
    eng, _ = engine()
    h = run(eng, [40, 41], max_tokens=20)
    assert h.tokens == list(range(42, 49)) and h.finish_reason == "stop"  # the end token is not output
    assert h.text == "".join(f"<{t}>" for t in range(42, 49))
    h = run(eng, [1, 2], max_tokens=3)
    assert h.tokens == [3, 4, 5] and h.finish_reason == "length"


def test_greedy_steps_take_only_each_rows_argmax_and_others_take_the_logits():
    """A step whose every sequence draws the argmax of its logits, and keeps none of them,
    asks the model for the argmax alone; one sequence that samples, penalizes or keeps its
    logits makes the whole step take the logits. The tokens are the same either way."""
    eng, model = engine(n_batch=32)
    h = run(eng, [1], max_tokens=4)
    assert h.tokens == [2, 3, 4, 5] and model.greedy_steps == len(model.steps) == 4
    for params, kw in [
        (GREEDY, {"keep_logits": True}),
        (SamplingParams(temperature=0, repeat_penalty=1.3), {}),
        (SamplingParams(temperature=0.8, seed=1), {}),
    ]:
        model.gate.clear()
        before, greedy_before = len(model.steps), model.greedy_steps
        plain = eng.submit(Request([10], GREEDY, 3))
        other = eng.submit(Request([20], params, 3, **kw))
        model.gate.set()
        plain.result(), other.result()
        assert plain.tokens == [11, 12, 13], params
        steps = model.steps[before:]
        shared = sum(1 for s in steps if {seq for seq, _, _ in s} == {0, 1})
        assert shared >= 2, steps  # they did share steps, and none of those was greedy
        assert model.greedy_steps - greedy_before <= len(steps) - shared, params


def test_submit_frees_the_calling_threads_kernel_workers():
    """A caller that ran the model on its own thread (the research API) leaves idle OpenMP
    workers that slow the engine's worker 2x on ``cpu``: submit releases them, on that thread."""
    eng, model = engine()
    run(eng, [1], max_tokens=2)
    assert model.released == [threading.get_ident()]


def test_stop_strings_end_a_request():
    eng, _ = engine()
    h = run(eng, [1], max_tokens=20, stop=("<5>",))
    assert h.text == "<2><3><4>" and h.finish_reason == "stop"


def test_long_prompts_are_chunked_and_never_stall_running_decodes():
    eng, model = engine(n_batch=8)
    model.gate.clear()
    first = eng.submit(Request([40, 41], GREEDY, 6))
    long = eng.submit(Request(list(range(1, 31)), GREEDY, 2))  # 30 tokens: four steps of prefill
    model.gate.set()
    assert first.result() == "<42><43><44><45><46><47>" and long.result() == "<31><32>"
    assert max(len(s) for s in model.steps) <= 8
    decode_steps = [s for s in model.steps if any(42 <= tok <= 46 for _, _, tok in s)]
    assert [len([r for r in s if 42 <= r[2] <= 46]) for s in decode_steps] == [1] * 5  # one per step
    prefill_steps = [s for s in model.steps if any(tok <= 30 and pos == tok - 1 for _, pos, tok in s)]
    assert len(prefill_steps) >= 4
    # the long prompt's chunks ran beside the first request's decode tokens, not before them
    assert sum(1 for s in decode_steps if s in prefill_steps) >= 3


def test_many_sequences_share_a_step():
    eng, model = engine(n_batch=32)
    model.gate.clear()
    handles = [eng.submit(Request([i], GREEDY, 4)) for i in range(1, 9)]
    model.gate.set()
    for i, h in enumerate(handles, start=1):
        h.result()
        assert h.tokens == [i + 1, i + 2, i + 3, i + 4]
    assert len(model.steps) <= 5  # 8 sequences together: 1 prefill step + 3 decode steps (+1 admission race)
    assert max(len(s) for s in model.steps) == 8


def test_a_full_pool_preempts_the_newest_sequence_and_recomputes_it():
    # 6 blocks of 4 positions; two sequences each growing to 2 + 14 positions need 8 blocks
    eng, model = engine(n_blocks=6, block_size=4, n_batch=16)
    model.gate.clear()
    a = eng.submit(Request([1, 2], GREEDY, 14))
    b = eng.submit(Request([20, 21], GREEDY, 14))
    model.gate.set()
    a.result(), b.result()
    assert a.tokens == list(range(3, 17)) and a.finish_reason == "length"
    assert b.tokens == list(range(22, 36)) and b.finish_reason == "length"
    assert eng.preemptions >= 1
    assert eng.pool.n_free == eng.pool.n_blocks


def test_a_full_pool_waits_or_raises_as_the_request_asks():
    eng, model = engine(n_blocks=4, block_size=4)
    model.gate.clear()
    a = eng.submit(Request(list(range(1, 13)), GREEDY, 4))  # 16 positions: the whole pool
    refused = eng.submit(Request([30, 31, 32, 33, 34], GREEDY, 2, if_full="raise"))
    waits = eng.submit(Request([30, 31, 32, 33, 34], GREEDY, 2))
    model.gate.set()
    with pytest.raises(PoolFullError, match="free blocks"):
        refused.result()
    assert waits.result() == "<35><36>"
    assert a.result() == "<13><14><15><16>"


def test_a_request_that_can_never_fit_is_refused_at_submit():
    eng, model = engine(n_ctx=64, n_blocks=4, block_size=4)
    with pytest.raises(PoolFullError, match="never fit"):
        eng.submit(Request([1, 2, 3], GREEDY, 20))
    with pytest.raises(ContextOverflowError, match="context of 64"):
        eng.submit(Request([1] * 60, GREEDY, 5))
    assert model.steps == []


def test_the_waiting_queue_is_bounded_when_asked():
    eng, model = engine(n_seq_max=1, max_waiting=1)
    model.gate.clear()
    running = eng.submit(Request([1], GREEDY, 2))
    while eng.waiting:  # the worker takes it and waits at the gate
        pass
    queued = eng.submit(Request([2], GREEDY, 2))
    with pytest.raises(ModelBusyError, match="max_waiting=1"):
        eng.submit(Request([3], GREEDY, 2))
    model.gate.set()
    assert running.result() == "<2><3>" and queued.result() == "<3><4>"


def test_cancel_frees_blocks_before_it_returns():
    eng, model = engine(n_blocks=16, block_size=4)
    free = eng.pool.n_free
    model.gate.clear()
    h = eng.submit(Request(list(range(1, 11)), GREEDY, 30))
    assert model.entered.wait(10)  # its first step is running
    cancelling = threading.Thread(target=h.cancel)
    cancelling.start()
    cancelling.join(0.2)
    assert cancelling.is_alive()  # waits for the step that is writing the request's blocks
    model.gate.set()
    cancelling.join(10)
    assert eng.pool.n_free == free
    assert list(h) == [] and h.finish_reason == "cancelled"
    waiting = eng.submit(Request([1], GREEDY, 3))
    waiting.cancel()
    assert eng.pool.n_free == free


def test_a_nan_fails_only_its_own_request():
    eng, model = engine(poison=5)
    model.gate.clear()
    bad = eng.submit(Request([3], GREEDY, 6))  # reaches token 5 on its second step
    good = eng.submit(Request([20], GREEDY, 6))
    model.gate.set()
    with pytest.raises(NumericalError):
        bad.result()
    assert good.result() == "<21><22><23><24><25><26>"
    assert eng.pool.n_free == eng.pool.n_blocks


def test_a_failing_step_fails_its_requests_and_the_engine_goes_on():
    eng, model = engine()

    class Broken(BaseException):  # not an Exception: gets past the step's own handler
        pass

    forward = model.forward
    model.forward = lambda batch: (_ for _ in ()).throw(Broken("worker bug"))
    handles = [eng.submit(Request([i], GREEDY, 3)) for i in (1, 2)]
    for h in handles:
        with pytest.raises(Broken, match="worker bug"):
            h.result()
    assert eng.pool.n_free == eng.pool.n_blocks
    model.forward = forward
    assert run(eng, [7], max_tokens=2).text == "<8><9>"


def test_an_asyncio_reader_gets_the_same_pieces():
    eng, _ = engine()

    async def read():
        handle = eng.submit(Request([10], GREEDY, 4))
        return [piece async for piece in handle]

    assert asyncio.run(read()) == ["<11>", "<12>", "<13>", "<14>"]


def test_concurrent_prompts_with_a_shared_prefix_compute_it_once():
    eng, model = engine(n_blocks=64, block_size=4, n_batch=64)
    prefix = list(range(1, 13))  # three full blocks
    model.gate.clear()
    handles = [eng.submit(Request(prefix + [20 + i], GREEDY, 2)) for i in range(6)]
    model.gate.set()
    for i, h in enumerate(handles):
        assert h.result() == f"<{21 + i}><{22 + i}>"
    computed = [(pos, tok) for s in model.steps for _, pos, tok in s if pos < 12]
    assert sorted(computed) == list(enumerate(prefix))  # each prefix position ran once
    assert sorted(h.n_cached for h in handles) == [0] + [12] * 5


@settings(FUZZ_SETTINGS, max_examples=max(1, FUZZ_EXAMPLES // 4))
@given(
    data=st.data(),
    n_blocks=st.integers(8, 40),
    n_batch=st.integers(4, 24),
    n_seq_max=st.integers(1, 8),
)
def test_many_streams_with_cancels_lose_and_mix_nothing(data, n_blocks, n_batch, n_seq_max):
    eng, model = engine(n_blocks=n_blocks, block_size=4, n_batch=n_batch, n_seq_max=n_seq_max, n_ctx=32)
    requests = data.draw(
        st.lists(
            st.tuples(
                st.lists(st.integers(0, 47), min_size=1, max_size=12),  # prompt
                st.integers(1, 16),  # max_tokens
                st.one_of(st.none(), st.integers(0, 4)),  # cancel after this many pieces
            ),
            min_size=1,
            max_size=12,
        )
    )
    handles = [eng.submit(Request(p, GREEDY, n)) for p, n, _ in requests]
    errors: list[BaseException] = []

    def read(handle, cancel_after):
        try:
            for i, _ in enumerate(handle):
                if cancel_after is not None and i + 1 >= cancel_after:
                    handle.cancel()
                    break
            if cancel_after == 0:
                handle.cancel()
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(h, r[2])) for h, r in zip(handles, requests, strict=True)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors
    for handle, (prompt, n, cancel_after) in zip(handles, requests, strict=True):
        expected = list(range(prompt[-1] + 1, END))[:n]  # counts up to the end token
        if cancel_after is None:
            assert handle.tokens == expected
        else:
            assert handle.tokens == expected[: len(handle.tokens)]  # a prefix: nothing mixed in
    eng.close()
    assert eng.pool.n_free == eng.pool.n_blocks  # every block came back
    assert not eng.running and not eng.waiting


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (dict(ids=[1.5, 2.0]), "ids"),
        (dict(ids=[True, False]), "ids"),
        (dict(ids="hello"), "ids"),
        (dict(ids=[1], max_tokens=0), "max_tokens"),
        (dict(ids=[1], max_tokens=-1), "max_tokens"),
        (dict(ids=[1], max_tokens=2.5), "max_tokens"),
        (dict(ids=[1], max_tokens="4"), "max_tokens"),
        (dict(ids=[1], params={"temperature": 0}), "params"),
        (dict(ids=[1], stop=(1,)), "stop"),
        (dict(ids=[1], stop=("",)), "stop"),
        (dict(ids=[1], if_full="maybe"), "if_full"),
        (dict(ids=[1], all_logits="yes"), "all_logits"),
        (dict(ids=[1], keep_logits=1), "keep_logits"),
        (dict(ids=[1], ignore_eos="no"), "ignore_eos"),
        (dict(ids=[1], all_logits=True, max_tokens=5), "max_tokens"),
    ],
)
def test_a_bad_request_field_is_refused_where_it_enters(fields, param):
    with pytest.raises(InvalidParameterError, match=param):
        Request(**fields)


def test_submit_refuses_what_is_not_a_request_or_past_the_vocabulary_before_anything_runs():
    eng, model = engine()
    with pytest.raises(InvalidParameterError, match="Request"):
        eng.submit("hello")
    with pytest.raises(InvalidParameterError, match="ids"):
        eng.submit(Request([1, VOCAB]))
    with pytest.raises(InvalidParameterError, match="empty"):
        eng.submit(Request([]))
    assert model.steps == [] and not eng.waiting


def test_numpy_ids_and_a_single_stop_string_are_taken():
    eng, _ = engine()
    h = run(eng, np.array([1, 2], np.int64), max_tokens=20, stop="<6>")
    assert h.text == "<3><4><5>"


def test_an_all_logits_request_does_not_count_generated_tokens_against_the_context():
    eng, _ = engine(n_ctx=16)
    h = eng.submit(Request([1, 2, 3], all_logits=True))
    assert h.logits().shape == (3, VOCAB)


def test_a_preempted_request_that_asked_not_to_wait_still_finishes():
    eng, model = engine(n_blocks=6, block_size=4, n_batch=16)
    model.gate.clear()
    a = eng.submit(Request([1, 2], GREEDY, 14))
    b = eng.submit(Request([20, 21], GREEDY, 14, if_full="raise"))  # admitted, later preempted
    model.gate.set()
    assert a.result() and b.result()
    assert b.tokens == list(range(22, 36)) and eng.preemptions >= 1
