"""The engine with a real model: many requests at once give what each gives alone.

On ``cpu`` that holds bit for bit (each row's arithmetic does not depend on the batch); on
``numpy`` and ``opencl`` the greedy tokens agree and the logits differ by rounding only,
because their matmuls reduce a row in an order that depends on how many rows there are
(OpenBLAS; OpenCL's matrix-vector kernel up to 4 rows, tiled matmul above).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import conformance_backend_names, load_backend

import realm
from realm.engine.request import Request
from realm.errors import ContextOverflowError
from realm.generate import SamplingParams
from realm.gguf.types import GGMLType
from realm.model.passes import Batch
from realm.models_on_pypi import smollm2_path
from realm.step_program import StepRecorder
from realm.testing import write_model

SYSTEM = (
    "You are a patient teacher of geography and history. Answer in one short sentence, "
    "name the country first, and never use lists, tables or more than twenty words. When a "
    "question is about a place, say which continent it is on; when it is about a person, say "
    "in which century they lived. If you do not know, say so plainly."
)
# Each question starts with its own word, so the prompts share exactly the system part.
QUESTIONS = [
    "What is the capital of France?",
    "Where is Mount Kilimanjaro?",
    "Who built Machu Picchu?",
    "Which river flows through Cairo?",
    "How large is the Pacific Ocean?",
    "Describe the Atacama desert.",
    "Name the capital of Japan.",
    "Does Finland have many lakes?",
    "Tell me where the Vikings lived.",
    "Explain why the Nile floods.",
    "Locate Angkor Wat.",
    "Give the sea north of Turkey.",
    "Byzantium became which city?",
    "Is Lake Titicaca high?",
    "Iceland is known for what?",
    "Rome was founded by whom, in legend?",
]
GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def smollm2_cpu():
    """Two separate instances: one runs requests together, the other one at a time."""
    together = realm.load(smollm2_path(), device="cpu", n_ctx=1024)
    alone = realm.load(smollm2_path(), device="cpu", n_ctx=1024)
    yield together, alone
    together.close()
    alone.close()


def _in_threads(fn, n):
    results: list[object] = [None] * n
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def work(i):
        try:
            start.wait()
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    return results


def test_sixteen_requests_with_one_system_prompt_match_their_solo_runs_and_share_its_blocks(smollm2_cpu):
    together, alone = smollm2_cpu
    messages = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS]
    prompts = [together.chat_tokens(m) for m in messages]
    engine, pool = together.engine, together.engine.pool
    allocations_before, hits_before = pool.n_allocations, engine.prefix_hit_tokens

    got = _in_threads(lambda i: together.chat(messages[i], max_tokens=16, temperature=0), 16)

    for i, m in enumerate(messages):
        solo = alone.chat(m, max_tokens=16, temperature=0)
        assert got[i].tokens == solo.tokens, QUESTIONS[i]
        assert got[i].text == solo.text
    # the system prompt's full blocks were computed and stored once, then shared by 15 requests
    common = 0
    while all(p[common] == prompts[0][common] for p in prompts):
        common += 1
    bs = pool.block_size
    shared_blocks = common // bs
    assert shared_blocks >= 4
    assert engine.prefix_hit_tokens - hits_before == 15 * shared_blocks * bs
    # every other block was a sequence's own: prompt and fed-back tokens, nothing allocated twice
    own = 0
    for prompt, completion in zip(prompts, got, strict=True):
        fed = len(completion.tokens) - (completion.finish_reason == "length")
        own += pool.blocks_needed(len(prompt) + fed) - shared_blocks
    assert pool.n_allocations - allocations_before == shared_blocks + own


def test_a_greedy_request_is_bit_identical_beside_seven_others_at_different_stages(smollm2_cpu):
    together, alone = smollm2_cpu
    target = together.tokenize("The three most important inventions of the last century were")
    others = [
        together.tokenize(text)
        for text in (
            "Once upon a time",
            "def fibonacci(n):",
            "The weather in London is",
            "List of prime numbers: 2, 3, 5,",
            "In 1969, the first humans",
            "Photosynthesis is the process",
        )
    ]
    others.append(together.tokenize(" ".join(["a long document about rivers and mountains"] * 40)))  # chunked
    lengths = [8 + 3 * i for i in range(len(others))]

    def solo(prompt, n):
        return alone.engine.submit(Request(prompt, GREEDY, n, keep_logits=True))

    expected = solo(target, 24)
    expected.result()
    expected_others = [solo(p, n) for p, n in zip(others, lengths, strict=True)]
    for handle in expected_others:
        handle.result()

    stream = together.engine.submit(Request(target, GREEDY, 24, keep_logits=True))
    pieces = iter(stream)
    handles = []
    for prompt, n in zip(others, lengths, strict=True):  # each joins while the target is at a later step
        next(pieces)
        handles.append(together.engine.submit(Request(prompt, GREEDY, n, keep_logits=True)))
    for _ in pieces:
        pass
    for got, want in zip([stream, *handles], [expected, *expected_others], strict=True):
        got.result()
        assert got.tokens == want.tokens
        # not just the same tokens: the same logits, bit for bit, at every step
        for step, (a, b) in enumerate(zip(got.token_logits, want.token_logits, strict=True)):
            assert np.array_equal(a, b), f"logits differ at step {step}"


def test_greedy_tokens_picked_in_the_step_are_the_argmax_of_the_logits(smollm2_cpu, monkeypatch):
    """Greedy requests that keep no logits get their tokens from the step's own argmax (the
    logits stay on the device); the same requests keeping their logits get the same tokens,
    each the argmax of the logits beside it."""
    together, alone = smollm2_cpu
    prompts = [together.tokenize(p) for p in ("The largest planet is", "Rivers flow into", "1, 1, 2, 3, 5,")]
    t = together.transformer
    calls = {"forward": 0, "forward_greedy": 0}

    def counting(name):
        run = getattr(t, name)

        def counted(batch):
            calls[name] += 1
            return run(batch)

        return counted

    for name in calls:
        monkeypatch.setattr(t, name, counting(name))

    handles = [together.engine.submit(Request(p, GREEDY, 12)) for p in prompts]
    for h in handles:
        h.result()
    assert calls["forward_greedy"] >= 12 and calls["forward"] == 0
    assert t._picks_in_pass and any(key[-1] is True for key in t._programs)  # picked in the pass
    for prompt, got in zip(prompts, handles, strict=True):
        want = alone.engine.submit(Request(prompt, GREEDY, 12, keep_logits=True))
        want.result()
        assert got.tokens == want.tokens
        assert [int(np.argmax(row)) for row in want.token_logits] == want.tokens


def test_cancelling_mid_stream_frees_the_blocks_at_once(smollm2_cpu):
    together, _ = smollm2_cpu
    pool = together.engine.pool
    free = pool.n_free
    prompt = "Once upon a time, in a land far away,"
    stream = together.generate(prompt, max_tokens=200, temperature=0, stream=True)
    pieces = iter(stream)
    next(pieces), next(pieces)
    assert pool.n_free < free
    stream.close()
    assert pool.n_free == free
    assert 2 <= len(stream.tokens) < 200


def test_a_request_too_long_for_the_context_is_refused_before_anything_runs(smollm2_cpu):
    together, _ = smollm2_cpu
    engine = together.engine
    steps, free = engine.steps, engine.pool.n_free
    with pytest.raises(ContextOverflowError, match="1024"):
        together.generate([1] * 1000, max_tokens=100)
    with pytest.raises(ContextOverflowError, match="1024"):
        together.logits([1] * 1025)
    with pytest.raises(ContextOverflowError):
        engine.submit(Request([1] * 1020, GREEDY, 10))
    assert engine.steps == steps and engine.pool.n_free == free


def test_generate_batch_gives_what_generate_gives(smollm2_cpu):
    together, alone = smollm2_cpu
    prompts = ["The capital of Italy is", "1, 2, 3, 4,", "Water boils at"]
    batch = together.generate_batch(prompts, max_tokens=10, temperature=0.7, seed=11)
    for prompt, completion in zip(prompts, batch, strict=True):
        solo = alone.generate(prompt, max_tokens=10, temperature=0.7, seed=11)
        assert (completion.text, completion.tokens, completion.finish_reason) == (
            solo.text,
            solo.tokens,
            solo.finish_reason,
        )


@pytest.mark.parametrize("device", ["numpy", *[d for d in conformance_backend_names() if d != "cpu"]])
def test_other_backends_agree_on_greedy_tokens_and_round_logits_only(tmp_path, device):
    if device != "numpy":
        load_backend(device)  # fails if the backend is required but missing
    path = write_model(tmp_path / "m.gguf", n_layer=2, qtype=GGMLType.Q8_0, seed=4)
    model = realm.load(path, device=device)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16, 17, 18, 19, 20, 21], [22]]
    alone_tokens = [model.generate(p, max_tokens=10, temperature=0).tokens for p in prompts]
    alone_logits = [model.logits(p) for p in prompts]
    tokens = _in_threads(lambda i: model.generate(prompts[i], max_tokens=10, temperature=0).tokens, 4)
    logits = _in_threads(lambda i: model.logits(prompts[i]), 4)
    assert tokens == alone_tokens
    for got, want in zip(logits, alone_logits, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", ["numpy", *conformance_backend_names()])
@pytest.mark.parametrize("n_tokens", [3, 70], ids=["short", "past-programs"])
def test_a_greedy_pass_picks_the_argmax_of_the_logits_it_would_return(tmp_path, device, n_tokens):
    """`forward_greedy` on every backend: picked in the pass where the backend offers
    `argmax_rows` (as a program and op by op: 70 tokens are past a program's length), on the
    host from the logits where it does not; always ``np.argmax`` of what `forward` returns."""
    if device != "numpy":
        load_backend(device)  # fails if the backend is required but missing
    path = write_model(tmp_path / "m.gguf", n_layer=2, qtype=GGMLType.Q8_0, seed=9)
    model = realm.load(path, device=device)
    t, pool = model.transformer, model.transformer.cache.pool
    assert t._picks_in_pass == (device != "numpy")  # the reference's models stay its definition
    rng = np.random.default_rng(5)
    tables = [pool.new_sequence([], share=False) for _ in range(2)]
    for table in tables:
        pool.reserve(table, n_tokens)
    split = n_tokens // 3
    positions = np.array([*range(split), *range(n_tokens - split)], np.int32)
    seq_ids = np.array([0] * split + [1] * (n_tokens - split), np.int32)
    # the last rows' logits: sequence 0's last token, and sequence 1's last two
    order = [*range(split - 1), *range(split, n_tokens - 2), split - 1, n_tokens - 2, n_tokens - 1]
    ids = rng.integers(0, t.cfg.n_vocab, n_tokens).tolist()
    batch = Batch(ids, positions[order], seq_ids[order], tables, 3)
    logits, finite = t.forward(batch)
    picks, picks_finite = t.forward_greedy(batch)
    assert logits.shape == (3, t.cfg.n_vocab) and finite.tolist() == [True] * 3
    assert picks.dtype == np.int64 and picks.tolist() == np.argmax(logits, axis=1).tolist()
    assert picks_finite.tolist() == finite.tolist()
    for table in tables:
        pool.free(table)


def test_research_calls_after_the_engine_ran_free_their_threads_kernel_workers(tmp_path, monkeypatch):
    """The research API runs kernels on the caller's thread; once the engine has run on its
    own thread, that thread's idle workers would halve the engine's speed on cpu, even when
    other threads submit the requests: eval, finish and reset free them as they end. Research
    alone never pays for it."""
    model = realm.load(write_model(tmp_path / "m.gguf", n_layer=2, qtype=GGMLType.Q8_0, seed=2), device="cpu")
    t = model.transformer
    released: list[int] = []
    monkeypatch.setattr(t, "_release_threads", lambda: released.append(threading.get_ident()))
    t.eval([1, 2, 3])
    t.reset()
    assert released == []
    model.generate([4, 5], max_tokens=2, temperature=0)
    assert released == [threading.get_ident()]  # submit, on the calling thread
    t.eval([1, 2])
    assert released == [threading.get_ident()] * 2
    t.embed([3])
    for il in range(t.cfg.n_layer):
        t.forward_layer(il)
    t.finish()
    t.reset()
    assert released == [threading.get_ident()] * 4
    # from any thread, even while the worker records a step (the backend is then a recorder
    # that refuses every call): the backend's method was looked up when the model was built
    recorded_on = t.backend
    t.backend = StepRecorder(recorded_on)
    try:
        t.release_caller_threads()
    finally:
        t.backend = recorded_on
    assert len(released) == 5
