"""realm.gguf.read_gguf on well-formed files: values, tensor index, mapping, versions."""

from __future__ import annotations

import gc
import struct

import gguf
import numpy as np
import pytest
from golden import model_path

from realm.errors import ModelNotFoundError, RealmError
from realm.gguf import GGMLType, GGUFValueType, read_gguf
from tests.gguf_samples import (
    NESTED_INTS,
    NESTED_STRINGS,
    NUMERIC_ARRAYS,
    SCALARS,
    STRING_ARRAY,
    big_strings,
    write_sample,
)


@pytest.fixture
def sample(tmp_path):
    return write_sample(tmp_path / "sample.gguf")


def test_value_type_ids_match_the_gguf_package():
    assert {t.name: t.value for t in GGUFValueType} == {t.name: t.value for t in gguf.GGUFValueType}


@pytest.mark.parametrize("tensors_data", [True, False])
def test_scalars_read_back_as_written(sample, tensors_data):
    with read_gguf(sample.path, tensors_data=tensors_data) as f:
        for key, (value, vtype) in SCALARS.items():
            got = f.metadata[key]
            if vtype == gguf.GGUFValueType.FLOAT32:
                assert type(got) is float and got == float(np.float32(value)), key
            else:
                assert type(got) is type(value) and got == value, key
        assert f.get("general.architecture") == "testarch"
        assert f.get("no.such.key", "fallback") == "fallback"


@pytest.mark.parametrize("tensors_data", [True, False])
def test_arrays_read_back_as_written(sample, tensors_data):
    with read_gguf(sample.path, tensors_data=tensors_data) as f:
        for key, (values, _, dtype) in NUMERIC_ARRAYS.items():
            got = f.metadata[key]
            assert isinstance(got, np.ndarray) and got.dtype == np.dtype(dtype), key
            np.testing.assert_array_equal(got, np.array(values, dtype=dtype), err_msg=key)
        assert f.metadata["test.arr.string"] == STRING_ARRAY
        nested = f.metadata["test.arr.nested_int"]
        assert isinstance(nested, list) and len(nested) == len(NESTED_INTS)
        for got, want in zip(nested, NESTED_INTS, strict=True):
            assert got.dtype == np.int32 and got.tolist() == want
        assert f.metadata["test.arr.nested_string"] == NESTED_STRINGS


def test_metadata_keys_are_in_file_order(sample):
    with read_gguf(sample.path) as f:
        reference = gguf.GGUFReader(sample.path)
        assert list(f.metadata) == [k for k in reference.fields if not k.startswith("GGUF.")]


def _flatten(value):
    if isinstance(value, list) and value and not isinstance(value[0], str):
        return [x for item in value for x in _flatten(item)]
    if isinstance(value, list):
        return value
    return value.tolist()


def _assert_same_as_gguf_reader(f, reference):
    keys = [k for k in reference.fields if not k.startswith("GGUF.")]
    assert list(f.metadata) == keys
    for key in keys:
        field = reference.fields[key]
        want = field.contents()
        got = f.metadata[key]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            # GGUFReader flattens nested arrays; compare element by element.
            assert _flatten(got) == want, key
        else:
            assert got == want and type(got) is type(want), key

    assert list(f.tensors) == [t.name for t in reference.tensors]
    for ref in reference.tensors:
        info = f.tensors[ref.name]
        assert info.shape == tuple(reversed(ref.shape.tolist())), ref.name
        assert int(info.qtype) == int(ref.tensor_type), ref.name
        assert info.offset == ref.data_offset and info.nbytes == ref.n_bytes, ref.name
    assert f.data_offset == reference.data_offset
    assert f.alignment == reference.alignment


def test_sample_matches_gguf_reader(sample):
    reference = gguf.GGUFReader(sample.path)
    with read_gguf(sample.path) as f:
        _assert_same_as_gguf_reader(f, reference)
        for ref in reference.tensors:
            got = f.tensor_data(ref.name)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, np.asarray(ref.data).view(np.uint8).reshape(-1))


def test_tensors_match_what_was_written(sample):
    with read_gguf(sample.path) as f:
        assert list(f.tensors) == list(sample.tensors)
        for name, (raw, qtype, shape) in sample.tensors.items():
            info = f.tensors[name]
            assert info.qtype == GGMLType(int(qtype)) and info.shape == shape, name
            assert info.nbytes == raw.size and info.offset % 32 == 0, name
            np.testing.assert_array_equal(f.tensor_data(name), raw, err_msg=name)
        floats = f.tensor_data("f32.4d").view(np.float32).reshape(f.tensors["f32.4d"].shape)
        assert floats.shape == (2, 1, 3, 4)


def test_tensor_data_is_a_read_only_view_not_a_copy(sample):
    with read_gguf(sample.path) as f:
        first = f.tensor_data("q4_0.2d")
        second = f.tensor_data("q4_0.2d")
        assert np.shares_memory(first, second)
        assert not first.flags.owndata and not first.flags.writeable
        with pytest.raises(ValueError):
            first[0] = 1


def test_views_outlive_close_and_closed_file_refuses_reads(sample):
    f = read_gguf(sample.path)
    view = f.tensor_data("i32.2d")
    expected = sample.tensors["i32.2d"][0]
    f.close()
    assert f.closed
    gc.collect()
    np.testing.assert_array_equal(view, expected)
    with pytest.raises(RealmError, match="closed"):
        f.tensor_data("i32.2d")
    f.close()  # a second close is harmless


def test_context_manager_closes(sample):
    with read_gguf(sample.path) as f:
        assert not f.closed
    assert f.closed


def test_unknown_tensor_name_is_a_key_error(sample):
    with read_gguf(sample.path) as f, pytest.raises(KeyError, match="no.such.tensor"):
        f.tensor_data("no.such.tensor")


def test_header_only_mode_reads_everything_but_data(sample):
    with read_gguf(sample.path) as full, read_gguf(sample.path, tensors_data=False) as light:
        assert light.tensors == full.tensors
        assert light.data_offset == full.data_offset and light.file_size == full.file_size
        with pytest.raises(RealmError, match="tensors_data=False"):
            light.tensor_data("f32.2d")


def test_header_larger_than_the_first_read_is_read_in_pieces(tmp_path):
    # ~3 MiB of strings: the header-only reader must grow its buffer mid-array.
    sample = write_sample(tmp_path / "big.gguf", extra_strings=120_000)
    light = read_gguf(sample.path, tensors_data=False)
    assert light.data_offset > 2 * (1 << 20)
    assert light.metadata["test.arr.big_string"] == big_strings(120_000)
    with read_gguf(sample.path) as full:
        assert light.tensors == full.tensors


@pytest.mark.parametrize("alignment", [1, 8, 64, 4096])
def test_custom_alignment(tmp_path, alignment):
    sample = write_sample(tmp_path / "aligned.gguf", alignment=alignment)
    reference = gguf.GGUFReader(sample.path)
    with read_gguf(sample.path) as f:
        assert f.alignment == alignment and f.get("general.alignment") == alignment
        assert f.data_offset % alignment == 0
        _assert_same_as_gguf_reader(f, reference)
        for name, (raw, _, _) in sample.tensors.items():
            assert (f.tensors[name].offset - f.data_offset) % alignment == 0
            np.testing.assert_array_equal(f.tensor_data(name), raw)


def test_default_alignment_is_32(sample):
    with read_gguf(sample.path) as f:
        assert "general.alignment" not in f.metadata
        assert f.alignment == 32 and f.data_offset % 32 == 0


@pytest.mark.parametrize("version", [2, 3])
def test_versions_2_and_3(sample, tmp_path, version):
    data = bytearray(sample.path.read_bytes())
    struct.pack_into("<I", data, 4, version)
    path = tmp_path / f"v{version}.gguf"
    path.write_bytes(bytes(data))
    reference = gguf.GGUFReader(path)
    with read_gguf(path) as f:
        assert f.version == version
        _assert_same_as_gguf_reader(f, reference)


def test_empty_arrays_and_no_tensors(tmp_path):
    # GGUFWriter refuses empty arrays, so this file is built by hand.
    body = b"".join(
        [
            struct.pack("<Q", 5) + b"empty" + struct.pack("<IIQ", 9, 5, 0),  # int32[0]
            struct.pack("<Q", 4) + b"strs" + struct.pack("<IIQ", 9, 8, 0),  # string[0]
        ]
    )
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + body)
    for tensors_data in (True, False):
        with read_gguf(path, tensors_data=tensors_data) as f:
            assert f.tensors == {}
            assert f.metadata["empty"].dtype == np.int32 and f.metadata["empty"].size == 0
            assert f.metadata["strs"] == []


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        read_gguf(tmp_path / "nope.gguf")


# -- the real models ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real_model(request):
    path = model_path(request.param)  # fails when REALM_REQUIRE_MODELS is set, else skips
    return path, gguf.GGUFReader(path)


def test_real_model_matches_gguf_reader(real_model):
    path, reference = real_model
    with read_gguf(path) as f:
        _assert_same_as_gguf_reader(f, reference)
        for ref in (reference.tensors[0], reference.tensors[len(reference.tensors) // 2]):
            np.testing.assert_array_equal(
                f.tensor_data(ref.name), np.asarray(ref.data).view(np.uint8).reshape(-1)
            )
        last = reference.tensors[-1]
        np.testing.assert_array_equal(
            f.tensor_data(last.name), np.asarray(last.data).view(np.uint8).reshape(-1)
        )


def test_real_model_header_only(real_model):
    path, reference = real_model
    with read_gguf(path, tensors_data=False) as f:
        _assert_same_as_gguf_reader(f, reference)
