"""Every public entry point refuses a bad argument with an `InvalidParameterError` naming it.

These are the inputs that used to be taken silently (bytes as token ids, floats truncated,
``stop=[""]`` ignored) or failed deep inside with a foreign exception. numpy integers are
accepted wherever Python ints are.
"""

from __future__ import annotations

import numpy as np
import pytest

import realm
from realm.errors import InvalidParameterError, RealmError
from realm.gguf.types import GGMLType
from realm.testing import write_model


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("args") / "m.gguf", n_layer=1, qtype=GGMLType.Q8_0, seed=5)


@pytest.fixture(scope="module")
def model(path):
    return realm.load(path, device="numpy")


def _refused(param: str, call) -> InvalidParameterError:
    with pytest.raises(InvalidParameterError) as err:
        call()
    assert param in str(err.value), f"the message does not name {param!r}: {err.value}"
    assert isinstance(err.value, RealmError) and isinstance(err.value, ValueError)
    return err.value


@pytest.mark.parametrize("text", [None, 123, b"Hello", ["a"]])
def test_tokenize_takes_only_text(model, text):
    _refused("text", lambda: model.tokenize(text))


def test_lone_surrogate_is_named_not_a_tokenizers_type_error(model):
    err = _refused("prompt", lambda: model.generate("ab\ud800cd", max_tokens=1))
    assert "index 2" in str(err)
    _refused("text", lambda: model.tokenize("\udfff"))


@pytest.mark.parametrize(
    "prompt, param",
    [
        (b"Hello", "prompt"),  # bytes are not token ids
        ([1.5, 2.0], "prompt[0]"),  # floats are not truncated
        (np.array([1.0, 2.0]), "prompt"),
        ([True, 3], "prompt[0]"),
        ([1, 10**9], "prompt"),  # out of the vocabulary
        ([-1], "prompt"),
        (None, "prompt"),
    ],
)
def test_generate_refuses_bad_prompts(model, prompt, param):
    _refused(param, lambda: model.generate(prompt, max_tokens=1))


def test_logits_refuses_empty_and_out_of_range(model):
    _refused("ids", lambda: model.logits([]))
    _refused("ids", lambda: model.logits([model.n_vocab]))
    _refused("ids", lambda: model.transformer.eval([model.n_vocab]))
    _refused("ids", lambda: model.detokenize([model.n_vocab]))


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.0}, "seed"),
        ({"max_tokens": 2.0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stop": [""]}, "stop[0]"),
        ({"stop": ""}, "stop"),
        ({"stop": [3]}, "stop[0]"),
        ({"stop": b"x"}, "stop"),
        ({"top_k": 1.5}, "top_k"),
        ({"temperature": float("nan")}, "temperature"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_generation_parameters(model, kwargs, param):
    _refused(param, lambda: model.generate("hi", **{"max_tokens": 2, **kwargs}))
    if "stream" not in kwargs:
        messages = [{"role": "user", "content": "hi"}]
        _refused(param, lambda: model.chat(messages, **{"max_tokens": 2, **kwargs}))


def test_unknown_chat_keyword_names_chat_not_an_internal_class(model):
    with pytest.raises(TypeError, match=r"chat\(\) got an unexpected keyword argument 'tempreature'"):
        model.chat([{"role": "user", "content": "hi"}], tempreature=0)


def test_numpy_integers_are_accepted_like_ints(model, path):
    ids = np.array([3, 4, 5], dtype=np.int32)
    a = model.generate(ids, max_tokens=np.int64(3), temperature=0, top_k=np.int32(5), seed=np.uint8(7))
    b = model.generate([3, 4, 5], max_tokens=3, temperature=0, top_k=5, seed=7)
    assert a.tokens == b.tokens and len(a.tokens) == 3
    np.testing.assert_array_equal(model.logits(ids), model.logits([3, 4, 5]))
    assert model.detokenize(np.array([3, 4])) == model.detokenize([3, 4])
    small = realm.load(path, device="numpy", n_ctx=np.int64(64), n_batch=np.int16(8))
    assert small.n_ctx == 64 and small.transformer.n_batch == 8


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"n_threads": 0}, "n_threads"),
        ({"n_threads": -2}, "n_threads"),
        ({"n_threads": 1.5}, "n_threads"),
        ({"n_batch": 10**9}, "n_batch"),  # used to try to allocate terabytes
        ({"n_batch": 0}, "n_batch"),
        ({"n_ctx": 0}, "n_ctx"),
        ({"n_ctx": 10**7}, "n_ctx"),  # far past the 256 positions the model was trained on
        ({"device": 3}, "device"),
    ],
)
def test_load_parameters(path, kwargs, param):
    _refused(param, lambda: realm.load(path, **{"device": "numpy", **kwargs}))


def test_n_ctx_up_to_the_trained_context_is_fine(path):
    assert realm.load(path, device="numpy", n_ctx=256).n_ctx == 256


def test_research_layer_index_and_detokenize_argument(model):
    t = model.transformer
    t.reset()
    t.embed([1, 2])
    _refused("il", lambda: t.forward_layer(model.config.n_layer))
    _refused("il", lambda: t.forward_layer(-1))  # used to run the last layer silently
    _refused("ids", lambda: model.detokenize(5))


@pytest.mark.parametrize("device", [3, None, "gpu-1", "cuda:x"])
def test_a_bad_device_string_is_a_bad_parameter(path, device):
    err = _refused("device", lambda: realm.load(path, device=device))
    assert isinstance(err, realm.BackendUnavailableError)  # what callers caught before
