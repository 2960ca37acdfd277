"""Fuzzing `realm.load` and a smoke run of the loaded model on hostile small models.

Two generators of hostile files: (1) the hyperparameter and tokenizer keys realm reads, each
replaced by a random value of a random type (or removed), and (2) random byte changes to a
valid file, mostly in its header. Whatever the file, loading it and then tokenizing,
generating (greedy and sampled), chatting and reading logits either works or raises a
`RealmError`; never another exception, a hang or a memory blow-up. `REALM_FUZZ_EXAMPLES`
sets how many files each test tries (the nox session ``fuzz`` runs many more).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import realm
from realm.errors import RealmError
from realm.gguf.reader import read_gguf
from realm.gguf.types import GGMLType
from realm.testing import write_model
from tests.fuzzing import FUZZ_SETTINGS, bounded_memory, time_limit

pytestmark = pytest.mark.fuzz

# write_model and tmp folders run per example, which hypothesis's fixture check would flag
LOAD_FUZZ_SETTINGS = settings(
    FUZZ_SETTINGS,
    suppress_health_check=[*FUZZ_SETTINGS.suppress_health_check, HealthCheck.function_scoped_fixture],
)

SMALL = dict(n_layer=1, n_embd=32, n_head=2, n_head_kv=1, n_ff=64, n_vocab=300, n_ctx=64, seed=1)

HYPERPARAMETERS = [
    "context_length", "embedding_length", "block_count", "feed_forward_length",
    "attention.head_count", "attention.head_count_kv", "attention.key_length",
    "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
    "rope.dimension_count", "rope.scale_linear", "rope.scaling.type", "rope.scaling.factor",
    "attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping", "vocab_size",
]
OTHER_KEYS = [
    "general.architecture", "general.alignment", "tokenizer.ggml.model", "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
    "tokenizer.ggml.scores", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix", "tokenizer.chat_template",
]
ARCHITECTURES = ["llama", "qwen2", "qwen3", "gemma3"]

# Values of every GGUF type, weighted towards the edges that broke realm before: 0, negatives,
# NaN, inf, huge counts, wrong types, arrays where scalars belong and scalars where arrays belong.
EDGES = st.sampled_from(
    [0, 1, 2, 3, 7, 16, 31, 32, 64, 255, 256, 299, 300, 301, 1 << 31, -1,
     0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e-30, 1e30, True, False]
)
VALUES = st.one_of(
    EDGES,
    EDGES,
    st.none(),  # removes the key
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(width=32),
    st.text(max_size=12),
    st.sampled_from(["llama", "gemma3", "gpt2", "default", "linear", "yarn", "{{ x }}", ""]),
    st.lists(st.integers(-3, 400), min_size=1, max_size=6).map(lambda v: np.array(v, np.int32)),
    st.lists(st.floats(width=32), min_size=1, max_size=4).map(lambda v: np.array(v, np.float32)),
    st.lists(st.text(max_size=4), min_size=1, max_size=6),
)


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("fuzz") / "base.gguf", qtype=GGMLType.Q8_0, **SMALL)


def smoke_run(path: Path) -> None:
    """Load ``path`` and use the model every way a caller does; only RealmError may escape.

    Logits that come back must be finite: non-finite ones must raise instead.
    """
    try:
        model = realm.load(path, device="numpy")
    except RealmError:
        return
    with model:
        for call in (
            lambda: model.tokenize("Hello wörld <|im_start|> 12", special=True),
            lambda: model.generate("Hello", max_tokens=3, temperature=0),
            lambda: model.generate([1, 2, 3], max_tokens=3, temperature=0.9, seed=1),
            lambda: "".join(model.generate("Hi", max_tokens=2, stream=True, seed=2)),
            lambda: model.chat([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0),
            lambda: _check_logits(model),
            lambda: model.detokenize(list(range(min(model.n_vocab, 40)))),
            lambda: model.info(),
        ):
            with contextlib.suppress(RealmError):
                call()


def _check_logits(model: realm.Model) -> None:
    # a model that loads must not compute NaN in silence (greedy argmax of NaN is token 0)
    assert np.isfinite(model.logits([0, 1, 2])).all()


@LOAD_FUZZ_SETTINGS
@given(
    arch=st.sampled_from(ARCHITECTURES),
    hyper=st.dictionaries(st.sampled_from(HYPERPARAMETERS), VALUES, max_size=3),
    other=st.dictionaries(st.sampled_from(OTHER_KEYS), VALUES, max_size=2),
)
def test_hostile_metadata_values(tmp_path_factory, arch, hyper, other):
    assume(hyper or other)
    changes = {**{f"{arch}.{k}": v for k, v in hyper.items()}, **other}
    path = tmp_path_factory.mktemp("meta") / "m.gguf"
    try:
        write_model(path, arch=arch, qtype=GGMLType.F32, metadata=changes, **SMALL)
    except (ValueError, OverflowError, TypeError, UnicodeEncodeError):
        assume(False)  # the gguf writer itself cannot write this value
    with time_limit(30), bounded_memory(256 << 20):
        smoke_run(path)


@LOAD_FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_bytes(tmp_path_factory, base_file, data):
    raw = bytearray(base_file.read_bytes())
    with read_gguf(base_file, tensors_data=False) as f:
        header_end = f.data_offset
    n = data.draw(st.integers(1, 8), label="mutations")
    for _ in range(n):
        in_header = data.draw(st.integers(0, 9), label="where") < 8  # mostly the header
        at = data.draw(st.integers(0, (header_end if in_header else len(raw)) - 1), label="at")
        kind = data.draw(st.sampled_from(["flip", "byte", "u64", "truncate"]), label="kind")
        if kind == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "byte":
            raw[at] = data.draw(st.integers(0, 255), label="value")
        elif kind == "u64":
            value = data.draw(st.sampled_from([0, 1, 255, 1 << 31, 1 << 32, (1 << 64) - 1]), label="u64")
            raw[at : at + 8] = value.to_bytes(8, "little")
        else:
            del raw[at:]
            break
    path = tmp_path_factory.mktemp("bytes") / "m.gguf"
    path.write_bytes(bytes(raw))
    with time_limit(30), bounded_memory(16 * len(raw) + (256 << 20)):
        smoke_run(path)


def test_the_unmutated_base_file_runs(base_file):
    # the fuzzers above start from this file: it must load and generate
    with realm.load(base_file, device="numpy") as model:
        assert model.logits([0, 1, 2]).shape == (3, 300)
        assert model.generate("Hello", max_tokens=3, temperature=0).completion_tokens >= 1
