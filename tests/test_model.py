"""The model layer on small synthetic models: caching, chunking, hooks, errors."""

from __future__ import annotations

import numpy as np
import pytest

import realm
from realm.errors import (
    BackendUnavailableError,
    CallOrderError,
    ContextOverflowError,
    GGUFFormatError,
    UnsupportedModelError,
)
from realm.generate import InvalidParameterError
from realm.gguf.types import GGMLType
from realm.model import kv_cache
from realm.testing import write_model


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("m") / "llama.gguf", arch="llama", qtype=GGMLType.Q8_0, seed=1)


@pytest.fixture(scope="module")
def model(llama_path):
    return realm.load(llama_path, device="numpy")


def test_all_position_logits_equal_incremental_decode(model):
    ids = list(range(3, 40))
    full = model.logits(ids)
    t = model.transformer
    t.reset()
    steps = [t.eval([i])[-1] for i in ids]
    np.testing.assert_allclose(np.stack(steps), full, rtol=1e-4, atol=1e-4)


def test_prompt_chunking_does_not_change_logits(llama_path, model):
    ids = list(range(5, 30))
    small_batches = realm.load(llama_path, device="numpy", n_batch=4)
    np.testing.assert_allclose(small_batches.logits(ids), model.logits(ids), rtol=1e-4, atol=1e-4)


def test_kv_cache_grows_without_changing_results(llama_path, model, monkeypatch):
    monkeypatch.setattr(kv_cache, "INITIAL_CAPACITY", 16)  # one block of the paged cache
    m = realm.load(llama_path, device="numpy", n_batch=5)
    assert m.transformer.cache.capacity == 16
    ids = list(range(1, 60))
    np.testing.assert_allclose(m.logits(ids), model.logits(ids), rtol=1e-4, atol=1e-4)
    assert m.transformer.cache.capacity >= 59


def test_prompt_longer_than_context_is_an_error(llama_path):
    m = realm.load(llama_path, device="numpy", n_ctx=16)
    with pytest.raises(ContextOverflowError, match="16"):
        m.logits(list(range(17)))
    with pytest.raises(ContextOverflowError):
        m.generate(list(range(10)), max_tokens=7)
    out = m.generate(list(range(10)), max_tokens=None, temperature=0)
    assert out.completion_tokens + 10 <= 16


def test_same_seed_same_text_and_stream_matches(model):
    a = model.generate("hello world", max_tokens=12, seed=5, temperature=1.0)
    b = model.generate("hello world", max_tokens=12, seed=5, temperature=1.0)
    assert a.tokens == b.tokens and a.text == b.text
    streamed = "".join(model.generate("hello world", max_tokens=12, seed=5, temperature=1.0, stream=True))
    assert streamed == a.text


def test_prefix_reuse_gives_the_same_greedy_output(model):
    first = model.generate("the quick brown fox", max_tokens=6, temperature=0)
    model.generate("the quick red", max_tokens=3, temperature=0)  # shares a prefix, then diverges
    again = model.generate("the quick brown fox", max_tokens=6, temperature=0)
    model.transformer.reset()
    fresh = model.generate("the quick brown fox", max_tokens=6, temperature=0)
    assert first.tokens == again.tokens == fresh.tokens


def test_hooks_read_and_replace_intermediates(model):
    ids = list(range(2, 12))
    base = model.logits(ids)
    seen = {}

    def record(name, x):
        seen[name] = x.copy()  # returning None leaves the tensor as it is

    model.transformer.hooks["*"] = record
    try:
        np.testing.assert_array_equal(model.logits(ids), base)
    finally:
        model.transformer.hooks.clear()
    n_layer = model.config.n_layer
    for name in ["inp_embd", "result_norm"] + [
        f"blk.{i}.{s}" for i in range(n_layer) for s in ("attn_out", "ffn_out", "l_out", "q", "k", "v")
    ]:
        assert name in seen, name
    assert seen["inp_embd"].shape == (len(ids), model.config.n_embd)
    # zeroing the last block's FFN output changes the logits; the recorded residual explains by how much
    last = n_layer - 1
    model.transformer.hooks[f"blk.{last}.ffn_out"] = lambda name, x: np.zeros_like(x)
    try:
        changed = model.logits(ids)
    finally:
        model.transformer.hooks.clear()
    assert not np.allclose(changed, base)


def test_bad_generation_arguments(model):
    with pytest.raises(InvalidParameterError):
        model.generate("hi", max_tokens=0)
    with pytest.raises(InvalidParameterError):
        model.generate("hi", top_p=2.0)
    with pytest.raises(InvalidParameterError):
        model.generate([], max_tokens=3)
    with pytest.raises(ValueError):
        model.logits([model.n_vocab])  # out of vocabulary


def test_unknown_device_is_refused(llama_path):
    with pytest.raises(BackendUnavailableError):
        realm.load(llama_path, device="quantum")


def test_info_describes_the_model(model):
    info = model.info()
    assert info["architecture"] == "llama"
    assert info["backend"] == "numpy"
    assert info["hyperparameters"]["n_layer"] == model.config.n_layer
    assert info["tensor_types"]["Q8_0"] > 0
    assert info["parameters"] > 0


def _rewrite_metadata(src, dst, **changes):
    """Copy a GGUF file with some metadata values changed (None deletes the key)."""
    from gguf import GGUFReader, GGUFWriter

    r = GGUFReader(src)
    arch = changes.pop("arch", None) or str(r.fields["general.architecture"].contents())
    w = GGUFWriter(dst, arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name in changes:
            continue
        w.add_key_value(
            name, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None
        )
    for name, value in changes.items():
        if value is not None:
            w.add_key_value(name, value[0], value[1])
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_unknown_architecture_names_the_supported_ones(llama_path, tmp_path):
    bad = _rewrite_metadata(llama_path, tmp_path / "x.gguf", arch="mamba9")
    with pytest.raises(UnsupportedModelError) as exc:
        realm.load(bad, device="numpy")
    assert "mamba9" in str(exc.value) and "llama" in str(exc.value)


def test_missing_hyperparameter_names_the_key(llama_path, tmp_path):
    bad = _rewrite_metadata(llama_path, tmp_path / "x.gguf", **{"llama.block_count": None})
    with pytest.raises(GGUFFormatError, match="llama.block_count"):
        realm.load(bad, device="numpy")


def test_perplexity_is_exp_mean_nll_of_the_logits(model):
    ids = list(range(7, 27))
    logits = model.logits(ids).astype(np.float64)
    m = logits.max(axis=-1, keepdims=True)
    p = np.exp(logits - m) / np.exp(logits - m).sum(axis=-1, keepdims=True)
    expected = np.exp(-np.mean([np.log(p[i, ids[i + 1]]) for i in range(len(ids) - 1)]))
    assert model.perplexity(ids) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        model.perplexity([3])


def test_stream_reports_finish_reason_and_tokens(model):
    stream = model.generate("hello", max_tokens=5, temperature=0, stream=True)
    text = "".join(stream)
    full = model.generate("hello", max_tokens=5, temperature=0)
    assert text == full.text and stream.tokens == full.tokens
    assert stream.finish_reason == full.finish_reason == "length"


@pytest.mark.parametrize("kw", [dict(n_ctx=0), dict(n_ctx=-5), dict(n_batch=0), dict(n_ctx=2.5)])
def test_bad_load_parameters(llama_path, kw):
    with pytest.raises(InvalidParameterError, match=next(iter(kw))):
        realm.load(llama_path, device="numpy", **kw)


def test_layer_by_layer_pass_equals_eval_and_exposes_the_residual(model):
    ids = list(range(4, 16))
    expected = model.logits(ids)
    t = model.transformer
    t.reset()
    t.embed(ids)
    norms = []
    for il in range(model.config.n_layer):
        t.forward_layer(il)
        norms.append(np.linalg.norm(t.residual(), axis=-1))
    np.testing.assert_array_equal(t.finish(), expected)
    assert t.tokens == ids and len(norms) == model.config.n_layer
    assert norms[0].shape == (len(ids),) and not np.allclose(norms[0], norms[-1])
    with pytest.raises(RuntimeError, match="embed"):
        t.forward_layer(0)
    with pytest.raises(ValueError, match="n_batch"):
        t.embed([1] * (t.n_batch + 1))


def test_a_call_during_this_threads_open_research_pass_is_refused_not_deadlocked(model):
    t = model.transformer
    t.reset()
    t.embed([3, 4, 5])
    with pytest.raises(CallOrderError, match="research pass"):
        model.generate([1, 2], max_tokens=2)
    with pytest.raises(CallOrderError, match="research pass"):
        model.logits([1, 2])
    t.reset()  # ends the pass: the model runs again
    assert model.generate([1, 2], max_tokens=2, temperature=0).completion_tokens == 2
