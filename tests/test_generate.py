"""Sampling, stop strings and UTF-8-safe streaming, on hand-made logits and tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realm.errors import NumericalError
from realm.generate import InvalidParameterError, Sampler, SamplingParams, TextAssembler


def sampler(**kw) -> Sampler:
    base = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    base.update(kw)
    return Sampler(SamplingParams(**base))


def logits_for(probs) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def test_temperature_zero_is_argmax():
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=1000).astype(np.float32)
        assert sampler(temperature=0.0)(logits) == int(np.argmax(logits))


def test_top_k_one_is_argmax_at_any_temperature():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    s = sampler(temperature=5.0, top_k=1, seed=3)
    assert {s(logits) for _ in range(200)} == {1}


def test_draws_follow_the_softmax():
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    s = sampler(seed=1)
    n = 20000
    counts = np.bincount([s(logits_for(probs)) for _ in range(n)], minlength=4)
    # four standard deviations of a binomial count
    assert np.all(np.abs(counts - n * probs) < 4 * np.sqrt(n * probs * (1 - probs)))


def test_temperature_sharpens():
    probs = np.array([0.6, 0.4])
    s = sampler(temperature=0.25, seed=2)
    n = 4000
    frac = np.mean([s(logits_for(probs)) == 0 for _ in range(n)])
    expected = 0.6**4 / (0.6**4 + 0.4**4)  # softmax(log p / T) with T = 1/4
    assert abs(frac - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = [0.5, 0.3, 0.15, 0.05]
    s = sampler(top_p=0.8, seed=4)
    seen = {s(logits_for(probs)) for _ in range(2000)}
    assert seen == {0, 1}


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    probs = [0.5, 0.3, 0.15, 0.05]
    s = sampler(min_p=0.25, seed=5)  # threshold 0.125: keeps 0.5, 0.3, 0.15
    seen = {s(logits_for(probs)) for _ in range(3000)}
    assert seen == {0, 1, 2}


def test_same_seed_same_draws_and_different_seed_differs():
    logits = np.zeros(50000, dtype=np.float32)
    s1, s2, s3 = sampler(seed=7), sampler(seed=7), sampler(seed=8)
    a = [s1(logits) for _ in range(20)]
    b = [s2(logits) for _ in range(20)]
    c = [s3(logits) for _ in range(20)]
    assert a == b
    assert a != c


def test_repeat_penalty_demotes_recent_tokens():
    logits = np.array([2.0, 1.9, -1.0], dtype=np.float32)
    s = Sampler(SamplingParams(temperature=0, repeat_penalty=1.2))
    assert s(logits, history=[]) == 0
    assert s(logits, history=[0]) == 1  # 2.0 / 1.2 < 1.9
    # a negative logit is multiplied, pushing it further down
    neg = np.array([-0.5, -0.55], dtype=np.float32)
    assert s(neg, history=[0]) == 1


def test_penalties_leave_the_callers_logits_as_they_were():
    logits = np.array([3.0, 2.9, 2.4, 0.0], dtype=np.float32)
    before = logits.copy()
    Sampler(SamplingParams(temperature=0, repeat_penalty=1.5))(logits, history=[0, 1])
    Sampler(SamplingParams(temperature=0.7, frequency_penalty=0.5, seed=0))(logits, history=[0, 0, 2])
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize(
    "bad", ["NaN inside", "NaN last", "NaN after +inf", "+inf inside", "all -inf", "empty"]
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_logits_with_nothing_to_draw_from_are_refused(bad, dtype, temperature):
    logits = np.linspace(-3, 3, 50).astype(dtype)  # the largest finite logit is the last
    if bad == "NaN inside":
        logits[17] = np.nan
    elif bad == "NaN last":
        logits[-1] = np.nan
    elif bad == "NaN after +inf":
        logits[[5, 9]] = [np.inf, np.nan]
    elif bad == "+inf inside":
        logits[3] = np.inf
    elif bad == "all -inf":
        logits[:] = -np.inf
    else:
        logits = logits[:0]
    with pytest.raises(NumericalError, match="NaN, \\+inf or all -inf"):
        Sampler(SamplingParams(temperature=temperature, seed=0))(logits)


def test_frequency_and_presence_penalties_subtract_per_occurrence():
    logits = np.array([3.0, 2.9, 2.4, 0.0], dtype=np.float32)
    s = Sampler(SamplingParams(temperature=0, frequency_penalty=0.3, presence_penalty=0.1))
    # token 0 seen twice: 3.0 - 2 * 0.3 - 0.1 = 2.3; token 1 once: 2.9 - 0.4 = 2.5; token 2 unseen: 2.4
    assert s(logits, history=[0, 1, 0]) == 1
    assert s(logits, history=[0, 0, 0]) == 1  # 3.0 - 0.9 - 0.1 = 2.0 < 2.9
    assert s(logits, history=[2]) == 0
    # only the last repeat_last_n tokens count
    window = Sampler(SamplingParams(temperature=0, frequency_penalty=5.0, repeat_last_n=1))
    assert window(logits, history=[0, 1]) == 0
    # negative penalties favour tokens already seen
    eager = Sampler(SamplingParams(temperature=0, presence_penalty=-1.0))
    assert eager(logits, history=[3]) == 0 and eager(logits, history=[2]) == 2


@pytest.mark.parametrize(
    "kw",
    [
        dict(frequency_penalty=float("nan")),
        dict(presence_penalty="0.5"),
        dict(temperature=-0.1),
        dict(temperature=float("nan")),
        dict(temperature=float("inf")),
        dict(top_k=-1),
        dict(top_k=2.5),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(min_p=-0.1),
        dict(min_p=1.1),
        dict(repeat_penalty=0.0),
        dict(repeat_last_n=-1),
        dict(seed="abc"),
        dict(temperature=True),
    ],
)
def test_bad_sampling_parameters_raise(kw):
    with pytest.raises(InvalidParameterError) as exc:
        SamplingParams(**kw)
    assert next(iter(kw)) in str(exc.value)


def bytes_of(table):
    return lambda t: table[t]


def test_assembler_never_splits_a_character():
    euro = "€".encode()  # three bytes, one per token
    table = {0: b"a", 1: euro[:1], 2: euro[1:2], 3: euro[2:], 4: b"b"}
    asm = TextAssembler(bytes_of(table))
    pieces = [asm.push(t) for t in [0, 1, 2, 3, 4]]
    assert pieces == ["a", "", "", "€", "b"]
    assert asm.flush() == ""


def test_assembler_incomplete_character_at_end_becomes_replacement():
    table = {0: b"x", 1: "€".encode()[:2]}
    asm = TextAssembler(bytes_of(table))
    assert asm.push(0) + asm.push(1) == "x"
    assert asm.flush() == "\ufffd"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=4), min_size=1, max_size=12))
def test_assembled_text_is_the_whole_bytes_decoded(pieces):
    """Any split of any bytes (characters cut anywhere, invalid bytes): the pieces and the
    flush join to the bytes decoded at once, and ``text`` holds what was emitted."""
    asm = TextAssembler(bytes_of(dict(enumerate(pieces))))
    out = "".join(asm.push(t) for t in range(len(pieces))) + asm.flush()
    assert out == b"".join(pieces).decode("utf-8", errors="replace")
    assert asm.text == out


def test_stop_string_across_tokens_is_cut_and_never_emitted():
    table = {0: b"Hello", 1: b" wor", 2: b"ld", 3: b"!"}
    asm = TextAssembler(bytes_of(table), stop=["world"])
    out = [asm.push(t) for t in [0, 1, 2]]
    assert "".join(out) == "Hello "
    assert asm.stopped
    assert "wor" not in "".join(out)


def test_held_back_text_is_released_when_it_is_not_a_stop():
    table = {0: b"Hello", 1: b" wor", 2: b"m"}
    asm = TextAssembler(bytes_of(table), stop=["world"])
    out = [asm.push(t) for t in [0, 1, 2]]
    assert out[1] == " "  # "wor" held back: could start "world"
    assert "".join(out) + asm.flush() == "Hello worm"
    assert not asm.stopped
