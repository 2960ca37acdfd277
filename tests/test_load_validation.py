"""Hyperparameters and vocabulary checked at load, and non-finite logits refused at run time.

Each case is a small synthetic file with one key broken the way a hostile or broken file
breaks it; loading must fail with a `RealmError` that names the file and the key, never load
a model that then produces NaN or fails halfway through a generation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import realm
from realm.engine.request import Request
from realm.errors import GGUFFormatError, NumericalError
from realm.generate import SamplingParams
from realm.gguf.types import GGMLType
from realm.testing import write_model


def _write(tmp_path, name="m.gguf", **kwargs):
    kwargs.setdefault("qtype", GGMLType.F32)
    return write_model(tmp_path / name, n_layer=1, n_vocab=300, seed=3, **kwargs)


@pytest.mark.parametrize(
    "key, value",
    [
        ("llama.rope.freq_base", 0.0),
        ("llama.rope.freq_base", -10000.0),
        ("llama.rope.freq_base", math.nan),
        ("llama.rope.freq_base", math.inf),
        ("llama.rope.dimension_count", 0),
        ("llama.rope.dimension_count", 15),
        ("llama.rope.scale_linear", math.nan),
        ("llama.attn_logit_softcapping", math.nan),
        ("llama.attn_logit_softcapping", math.inf),
        ("llama.final_logit_softcapping", math.nan),
        ("llama.final_logit_softcapping", -30.0),
        ("llama.attention.layer_norm_rms_epsilon", math.nan),
        ("llama.attention.sliding_window", 0),
        ("llama.context_length", 0),
        ("llama.block_count", 1 << 40),
        ("llama.embedding_length", "64"),
        ("llama.rope.scaling.type", np.array([0, 0], np.int32)),
    ],
)
def test_a_hyperparameter_out_of_range_is_refused_naming_file_key_and_range(tmp_path, key, value):
    path = _write(tmp_path, metadata={key: value})
    with pytest.raises(GGUFFormatError) as err:
        realm.load(path, device="numpy")
    message = str(err.value)
    assert key in message and str(path) in message and "expected" in message


def test_nan_rope_scaling_factor_is_refused(tmp_path):
    path = _write(
        tmp_path, metadata={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": math.nan}
    )
    with pytest.raises(GGUFFormatError, match=r"llama\.rope\.scaling\.factor"):
        realm.load(path, device="numpy")


def test_tokens_that_are_not_an_array_are_a_format_error(tmp_path):
    # was a TypeError from len() when the vocab_size key is absent too
    path = _write(tmp_path, metadata={"tokenizer.ggml.tokens": 7, "llama.vocab_size": None})
    with pytest.raises(GGUFFormatError, match=r"tokenizer\.ggml\.tokens.*array of strings"):
        realm.load(path, device="numpy")


@pytest.mark.parametrize("n_tokens", [302, 290])
def test_vocabulary_size_must_match_the_embedding_rows(tmp_path, n_tokens):
    base = _write(tmp_path)
    vocab = realm.Tokenizer.from_gguf(base).vocab
    tokens = list(vocab.tokens)
    tokens = tokens[:n_tokens] + [f"<extra{i}>" for i in range(n_tokens - len(tokens))]
    types = np.ones(n_tokens, dtype=np.int32)
    kept = set(tokens)  # merges must make tokens that are still in the vocabulary
    merges = [f"{a} {b}" for a, b in vocab.merges if {a, b, a + b} <= kept]
    for vocab_size_key in (300, None):  # with the declared size and without it
        path = _write(
            tmp_path,
            name=f"v{n_tokens}-{vocab_size_key}.gguf",
            metadata={
                "tokenizer.ggml.tokens": tokens,
                "tokenizer.ggml.token_type": types,
                "tokenizer.ggml.merges": merges,
                "llama.vocab_size": vocab_size_key,
            },
        )
        with pytest.raises(GGUFFormatError, match=r"vocab_size|token_embd"):
            realm.load(path, device="numpy")


def test_the_reference_model_itself_loads(tmp_path):
    # the broken files above differ from this one by one key only
    model = realm.load(_write(tmp_path), device="numpy")
    assert model.generate([1, 2, 3], max_tokens=2, temperature=0).completion_tokens >= 1


def test_non_finite_logits_raise_naming_the_first_layer(tmp_path):
    model = realm.load(_write(tmp_path), device="numpy")

    def poison(name, x):
        x = x.copy()
        x[0, 0] = np.nan
        return x

    model.transformer.hooks["blk.0.ffn_out"] = poison
    with pytest.raises(NumericalError, match=r"blk\.0\.ffn_out"):
        model.generate([1, 2, 3], max_tokens=4, temperature=0)
    with pytest.raises(NumericalError):
        model.logits([1, 2])
    del model.transformer.hooks["blk.0.ffn_out"]
    # the model recovers: the next call runs from a clean state
    assert np.isfinite(model.logits([1, 2])).all()


def _with_nan(tmp_path, tensor: str, rows: slice = slice(None)):
    """The test model with rows ``rows`` of its F32 ``tensor`` set to NaN."""
    path = _write(tmp_path)
    data = bytearray(path.read_bytes())
    from realm.gguf.reader import read_gguf

    with read_gguf(path) as f:
        info = f.tensors[tensor]
        values = np.frombuffer(data, np.float32, info.nbytes // 4, info.offset).reshape(info.shape)
        values = values.copy()
    values[rows] = np.nan
    data[info.offset : info.offset + info.nbytes] = values.tobytes()
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(data))
    return bad


def test_the_hosts_finite_check_finds_each_row():
    """The check for backends without count_nonfinite: large finite values whose squares
    overflow are finite; a NaN or an infinity fails its own row only."""
    from realm.model.passes import finite_rows

    x = np.full((4, 1000), 3e38, np.float32)
    x[1, 500], x[3, 999] = np.nan, -np.inf
    assert finite_rows(x).tolist() == [True, False, True, False]
    assert finite_rows(x[[0, 2]]).tolist() == [True, True]
    assert finite_rows(np.zeros((2, 8), np.float32)).tolist() == [True, True]


@pytest.mark.parametrize("device", ["numpy", "cpu"])  # cpu: counted inside the step's program
def test_corrupt_weights_give_a_numerical_error_not_empty_text(tmp_path, device):
    # an F32 norm weight full of NaN: greedy argmax of NaN used to give token 0 and "" / "stop"
    model = realm.load(_with_nan(tmp_path, "output_norm.weight"), device=device)
    with pytest.raises(NumericalError, match="result_norm|output"):
        model.generate("hello", max_tokens=3, temperature=0)
    with pytest.raises(NumericalError):
        model.generate("hello", max_tokens=3, temperature=0.7, seed=1)
    with pytest.raises(NumericalError):
        model.logits([1, 2, 3])
    with pytest.raises(NumericalError):
        model.transformer.eval([4])


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_a_step_fails_only_the_request_whose_logits_are_not_finite(tmp_path, device):
    """Token 7's embedding is NaN: a request with it fails, one sharing its steps does not."""
    model = realm.load(_with_nan(tmp_path, "token_embd.weight", slice(7, 8)), device=device)
    greedy = SamplingParams(temperature=0)
    alone = model.engine.submit(Request([1, 2, 3], greedy, 12, ignore_eos=True))
    alone.result()
    steps = model.engine.steps
    with model.transformer.lock:  # no step runs before both are in: their first steps are shared
        clean = model.engine.submit(Request([1, 2, 3], greedy, 12, ignore_eos=True))
        poisoned = model.engine.submit(Request([4, 7, 5], greedy, 12, ignore_eos=True))
    with pytest.raises(NumericalError, match="inp_embd"):
        poisoned.result()
    clean.result()
    assert clean.tokens == alone.tokens and len(clean.tokens) == 12
    assert model.engine.steps - steps == 12  # the poisoned prompt ran in one of the clean one's steps


def test_sampler_refuses_nan_logits_at_any_temperature():
    from realm.generate import Sampler, SamplingParams

    logits = np.full(10, np.nan, np.float32)
    for t in (0.0, 0.8):
        with pytest.raises(NumericalError):
            Sampler(SamplingParams(temperature=t, seed=0))(logits)
    masked = np.full(10, -np.inf, np.float32)
    masked[4] = 1.0  # -inf masks tokens out and stays allowed
    assert Sampler(SamplingParams(temperature=0.8, seed=0))(masked) == 4

