"""The two real models on PyPI against llama.cpp's own outputs, on every available backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import conformance_backend_names, load_backend
from golden import (
    MAX_KL,
    MIN_COSINE,
    MIN_GREEDY_AGREEMENT,
    cosine,
    kl_divergence,
    load_golden,
    model_path,
)

import realm

DEVICES = ["numpy", *conformance_backend_names()]
MODELS = ["smollm2", "gemma3"]

_loaded: dict[tuple[str, str], realm.Model] = {}


@pytest.fixture(params=[(m, d) for m in MODELS for d in DEVICES], ids=lambda p: f"{p[0]}-{p[1]}")
def model_and_golden(request):
    name, device = request.param
    if device != "numpy":
        load_backend(device)  # fails if the backend is required but missing, else skips
    key = (name, device)
    if key not in _loaded:
        _loaded.clear()  # one real model in memory at a time
        _loaded[key] = realm.load(model_path(name), device=device, n_ctx=1024)
    return _loaded[key], load_golden(name)


def test_prompt_tokens_match_llama_cpp(model_and_golden):
    model, golden = model_and_golden
    for prompt, expected in zip(golden.greedy, golden.prompts, strict=True):
        assert model.tokenize(prompt) == expected.tolist()


def test_last_position_logits_within_bounds(model_and_golden):
    model, golden = model_and_golden
    for ids, ref in zip(golden.prompts, golden.logits, strict=True):
        logits = model.logits(ids.tolist())
        assert logits.shape == (len(ids), model.n_vocab) and logits.dtype == np.float32
        last = logits[-1]
        assert int(np.argmax(last)) == int(np.argmax(ref))
        assert cosine(last, ref) >= MIN_COSINE
        assert kl_divergence(ref, last) <= MAX_KL


def test_teacher_forced_greedy_agreement(model_and_golden):
    model, golden = model_and_golden
    for prompt, ids in zip(golden.greedy, golden.prompts, strict=True):
        greedy = golden.greedy[prompt]["tokens"]
        seq = ids.tolist() + greedy[:-1]
        logits = model.logits(seq)
        predicted = logits[len(ids) - 1 :].argmax(axis=-1)
        agreement = float(np.mean(predicted == np.asarray(greedy)))
        assert agreement >= MIN_GREEDY_AGREEMENT, f"{prompt!r}: {agreement:.2f}"


def test_greedy_generation_starts_like_llama_cpp(model_and_golden):
    model, golden = model_and_golden
    prompt = "The capital of France is"
    expected = golden.greedy[prompt]
    out = model.generate(prompt, max_tokens=8, temperature=0)
    assert out.tokens[:4] == expected["tokens"][:4]
    assert expected["text"].startswith(out.text[: len(model.detokenize(expected["tokens"][:4]))])
    assert out.prompt_tokens == len(model.tokenize(prompt))
    assert out.completion_tokens == len(out.tokens) == 8 and out.finish_reason == "length"


def test_chat_renders_the_template_and_stops_at_end_of_turn(model_and_golden):
    model, _ = model_and_golden
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    if "tokenizer.chat_template" not in model.gguf.metadata:
        with pytest.raises(realm.ChatTemplateError, match="no chat template"):
            model.chat(messages)
        return
    ids = model.chat_tokens(messages)
    text = model.detokenize(ids)
    assert "What is the capital of France?" in text
    assert ids[:2] != [model.tokenizer.bos_id] * 2  # BOS once, whether the template or the tokenizer adds it
    reply = model.chat(messages, temperature=0, max_tokens=48)
    assert reply.finish_reason == "stop"  # the template's end-of-turn token ended it
    assert "Paris" in reply.text
    assert "<|im_end|>" not in reply.text and "<end_of_turn>" not in reply.text


def test_perplexity_of_llama_cpp_greedy_text_is_low(model_and_golden):
    model, golden = model_and_golden
    prompt = "The capital of France is"
    greedy_ids = golden.prompts[0].tolist() + golden.greedy[prompt]["tokens"]
    # the model's own greedy continuation is far more likely than the same tokens shuffled
    ppl = model.perplexity(greedy_ids)
    shuffled = greedy_ids[:1] + list(np.random.default_rng(0).permutation(greedy_ids[1:]))
    assert 1.0 < ppl < 10.0
    assert model.perplexity(shuffled) > 10 * ppl
