"""One `Model` shared by threads and by interleaved streams: each caller gets what it gets alone.

Every call is a request to the model's engine, which runs them together in batched steps,
each sequence in its own KV blocks. On ``cpu`` each row's arithmetic does not depend on the
batch, so results are bit-identical to running alone, whatever else runs.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import realm
from realm.errors import CallOrderError
from realm.gguf.types import GGMLType
from realm.testing import write_model

PROMPTS = [[5, 6, 7, 8], [9, 10, 11], [5, 6, 7, 12, 13], [20, 21]]
N_TOKENS = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = write_model(tmp_path_factory.mktemp("share") / "m.gguf", n_layer=2, qtype=GGMLType.Q8_0, seed=9)
    return realm.load(path, device="cpu")


@pytest.fixture(scope="module")
def alone(model):
    """Each prompt's greedy tokens and logits, run one at a time."""
    tokens = [model.generate(p, max_tokens=N_TOKENS, temperature=0).tokens for p in PROMPTS]
    logits = [model.logits(p) for p in PROMPTS]
    return tokens, logits


def test_threads_sharing_a_model_each_get_their_own_text(model, alone):
    expected_tokens, expected_logits = alone
    results: dict[tuple[int, int], object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(w: int) -> None:
        try:
            start.wait()
            for rep in range(3):
                i = (w + rep) % len(PROMPTS)
                if w % 2:
                    stream = model.generate(PROMPTS[i], max_tokens=N_TOKENS, temperature=0, stream=True)
                    "".join(stream)
                    results[w, rep] = ("tokens", i, stream.tokens)
                else:
                    results[w, rep] = ("logits", i, model.logits(PROMPTS[i]))
        except BaseException as exc:  # reported below, with the thread that raised it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(results) == 12
    for kind, i, value in results.values():
        if kind == "tokens":
            assert value == expected_tokens[i]
        else:
            np.testing.assert_array_equal(value, expected_logits[i])
    # nothing corrupted is left in the prefix cache for later callers
    assert model.generate(PROMPTS[0], max_tokens=N_TOKENS, temperature=0).tokens == expected_tokens[0]


def test_interleaved_streams_in_one_thread_each_get_their_own_text(model, alone):
    expected_tokens, expected_logits = alone
    first = model.generate(PROMPTS[0], max_tokens=N_TOKENS, temperature=0, stream=True)
    second = model.generate(PROMPTS[1], max_tokens=N_TOKENS, temperature=0, stream=True)
    pieces = iter(first)
    next(pieces)
    "".join(second)  # runs to the end while the first is half read
    np.testing.assert_array_equal(model.logits(PROMPTS[1]), expected_logits[1])
    assert model.generate(PROMPTS[2], max_tokens=N_TOKENS, temperature=0).tokens == expected_tokens[2]
    for _ in pieces:
        pass
    assert first.tokens == expected_tokens[0]
    assert second.tokens == expected_tokens[1]


def test_closing_or_dropping_a_stream_frees_the_model(model, alone):
    expected_tokens, _ = alone
    with model.generate(PROMPTS[2], max_tokens=N_TOKENS, temperature=0, stream=True) as stream:
        next(iter(stream))
    assert model.generate(PROMPTS[1], max_tokens=N_TOKENS, temperature=0).tokens == expected_tokens[1]

    stream = model.generate(PROMPTS[3], max_tokens=N_TOKENS, temperature=0, stream=True)
    for _ in stream:
        break
    del stream, _
    gc.collect()
    assert model.generate(PROMPTS[3], max_tokens=N_TOKENS, temperature=0).tokens == expected_tokens[3]


def test_a_stream_is_iterated_once(model):
    stream = model.generate(PROMPTS[0], max_tokens=2, temperature=0, stream=True)
    list(stream)
    with pytest.raises(CallOrderError, match="once"):
        iter(stream)


def test_another_thread_runs_beside_an_open_stream(model, alone):
    expected_tokens, expected_logits = alone
    stream = model.generate(PROMPTS[0], max_tokens=N_TOKENS, temperature=0, stream=True)
    pieces = iter(stream)
    next(pieces)
    got: list[np.ndarray] = []
    other = threading.Thread(target=lambda: got.append(model.logits(PROMPTS[2])))
    other.start()
    other.join(timeout=60)
    assert not other.is_alive()  # did not wait for the open stream
    np.testing.assert_array_equal(got[0], expected_logits[2])
    for _ in pieces:
        pass
    assert stream.tokens == expected_tokens[0]


def test_breaking_out_of_a_stream_frees_the_model_without_waiting_for_gc(model, alone):
    expected_tokens, _ = alone
    stream = model.generate(PROMPTS[1], max_tokens=N_TOKENS, temperature=0, stream=True)
    for _ in stream:
        break
    # `stream` is still referenced; its generator is not, so the model is free already
    assert model.generate(PROMPTS[0], max_tokens=N_TOKENS, temperature=0).tokens == expected_tokens[0]
    assert 1 <= len(stream.tokens) < N_TOKENS


def test_a_closed_model_refuses_to_run(tmp_path):
    path = write_model(tmp_path / "c.gguf", n_layer=1, qtype=GGMLType.Q8_0, seed=2)
    model = realm.load(path, device="numpy")
    model.close()
    model.close()  # closing twice is harmless
    with pytest.raises(CallOrderError, match="closed"):
        model.generate([1, 2], max_tokens=1)
    with pytest.raises(CallOrderError, match="closed"):
        model.logits([1, 2])


def test_closing_a_stream_from_another_thread_ends_its_blocked_reader(model):
    pool = model.engine.pool
    free = pool.n_free
    stream = model.generate(PROMPTS[0], max_tokens=20, temperature=0, stream=True)
    got: list[str] = []
    model.transformer.lock.acquire()  # hold the steps, so the reader is blocked waiting
    try:
        reader = threading.Thread(target=lambda: got.extend(stream))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive()
        closer = threading.Thread(target=stream.close)
        closer.start()
    finally:
        model.transformer.lock.release()
    closer.join(60)
    reader.join(60)
    assert not reader.is_alive() and not closer.is_alive()
    assert stream.finish_reason == "cancelled" and pool.n_free == free


def test_a_stream_closed_before_it_starts_runs_nothing(model):
    steps = model.engine.steps
    stream = model.generate(PROMPTS[0], max_tokens=4, stream=True)
    stream.close()
    assert list(stream) == [] and stream.finish_reason == "cancelled"
    assert model.engine.steps == steps


def test_closing_the_model_under_a_running_call_is_an_error_not_a_short_answer(tmp_path):
    path = write_model(tmp_path / "c.gguf", n_layer=1, qtype=GGMLType.Q8_0, seed=3)
    model = realm.load(path, device="cpu")
    errors: list[BaseException] = []
    model.transformer.lock.acquire()  # the call is admitted but its steps wait

    def call():
        try:
            model.generate([1, 2, 3], max_tokens=50, temperature=0)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while not model.engine.running and not model.engine.waiting:
        pass
    closer = threading.Thread(target=model.close)
    closer.start()
    model.transformer.lock.release()
    caller.join(60)
    closer.join(60)
    assert len(errors) == 1 and isinstance(errors[0], CallOrderError), errors
    with pytest.raises(CallOrderError, match="closed"):
        model.transformer.eval([1, 2])  # the research API is closed too
