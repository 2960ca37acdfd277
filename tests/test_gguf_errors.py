"""Malformed GGUF files: each one raises GGUFFormatError naming the offset or key.

Bad files are good files written by gguf.GGUFWriter with one field patched, or built
by hand with struct. Every case is read both with the data mapped and header-only.
"""

from __future__ import annotations

import re
import struct
import tracemalloc

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

from realm.errors import GGUFFormatError, UnsupportedQuantError
from realm.gguf import read_gguf
from tests.gguf_samples import gguf_string, key_offsets, patched, tensor_record

HUGE = 2**60


def write_small(path, extra=None) -> bytes:
    """A small valid file: a few keys of several types and three tensors."""
    writer = gguf.GGUFWriter(path, arch="testarch")
    writer.add_uint32("test.u32", 7)
    writer.add_string("test.str", "hello")
    writer.add_bool("test.bool", True)
    writer.add_key_value("test.dup_aa", 1, V.INT32)
    writer.add_key_value("test.dup_bb", 2, V.INT32)
    writer.add_key_value("test.arr_f32", [1.0, 2.0, 3.0], V.ARRAY, sub_type=V.FLOAT32)
    writer.add_key_value("test.arr_bool", [True, False], V.ARRAY, sub_type=V.BOOL)
    writer.add_key_value("test.arr_str", ["one", "two", "three"], V.ARRAY, sub_type=V.STRING)
    if extra is not None:
        extra(writer)
    rng = np.random.default_rng(1)
    writer.add_tensor("tensor_a", rng.standard_normal((2, 32)).astype(np.float32))
    q8 = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0)
    writer.add_tensor("tensor_b", q8, raw_dtype=Q.Q8_0)
    writer.add_tensor("tensor_c", rng.standard_normal(8).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def good(tmp_path) -> bytes:
    return write_small(tmp_path / "good.gguf")


def expect_error(tmp_path, data: bytes, *fragments: str, error=GGUFFormatError) -> str:
    """Read ``data`` both ways; each must raise ``error`` naming the file and ``fragments``."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    messages = []
    for tensors_data in (True, False):
        with pytest.raises(error) as info:
            read_gguf(path, tensors_data=tensors_data)
        message = str(info.value)
        assert str(path) in message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
        messages.append(message)
    assert messages[0] == messages[1]
    return messages[0]


def data_offset_of(data: bytes, name: str) -> int:
    return struct.unpack_from("<Q", data, tensor_record(data, name)["offset"])[0]


def test_the_small_file_is_valid(tmp_path, good):
    # Guards the other tests: their files differ from this one in one field only.
    (tmp_path / "ok.gguf").write_bytes(good)
    with read_gguf(tmp_path / "ok.gguf") as f:
        assert list(f.tensors) == ["tensor_a", "tensor_b", "tensor_c"]
        assert f.metadata["test.dup_aa"] == 1 and f.metadata["test.arr_str"][2] == "three"


# -- header -------------------------------------------------------------------------------


def test_bad_magic(tmp_path, good):
    expect_error(tmp_path, b"GGML" + good[4:], "offset 0", "magic", "b'GGUF'", "b'GGML'")


def test_version_1_is_rejected_with_a_clear_message(tmp_path, good):
    expect_error(tmp_path, patched(good, 4, "<I", 1), "offset 4", "version 1 is not supported")


@pytest.mark.parametrize("version", [0, 4, 999])
def test_unknown_version(tmp_path, good, version):
    expect_error(tmp_path, patched(good, 4, "<I", version), "offset 4", f"unknown GGUF version {version}")


def test_big_endian_file(tmp_path, good):
    expect_error(tmp_path, patched(good, 4, ">I", 3), "offset 4", "big-endian")


@pytest.mark.parametrize("size", [0, 2, 4, 7, 8, 15, 23])
def test_truncated_header(tmp_path, good, size):
    message = expect_error(tmp_path, good[:size], "offset", "truncated")
    assert re.search(r"offset \d+", message)


def test_every_truncation_point_is_a_format_error(tmp_path, good):
    (tmp_path / "ok.gguf").write_bytes(good)
    with read_gguf(tmp_path / "ok.gguf") as f:
        end = max(t.offset + t.nbytes for t in f.tensors.values())
    path = tmp_path / "cut.gguf"
    for size in range(end):
        path.write_bytes(good[:size])
        for tensors_data in (True, False):
            with pytest.raises(GGUFFormatError, match=r"offset \d+"):
                read_gguf(path, tensors_data=tensors_data)
    path.write_bytes(good[:end])  # the padding after the last tensor is optional
    read_gguf(path).close()


def test_truncated_data_names_the_tensor(tmp_path, good):
    (tmp_path / "ok.gguf").write_bytes(good)
    with read_gguf(tmp_path / "ok.gguf") as f:
        last = f.tensors["tensor_c"]
    cut = good[: last.offset + last.nbytes - 1]
    expect_error(tmp_path, cut, "'tensor_c'", f"offset {last.offset}", f"{len(cut)}-byte file", "past")


# -- metadata -----------------------------------------------------------------------------


def test_unknown_value_type(tmp_path, good):
    _, type_at, _ = key_offsets(good, "test.u32")
    expect_error(
        tmp_path,
        patched(good, type_at, "<I", 13),
        f"offset {type_at}",
        "'test.u32'",
        "unknown value type id 13",
    )


def test_unknown_array_element_type(tmp_path, good):
    _, _, value_at = key_offsets(good, "test.arr_f32")
    expect_error(
        tmp_path,
        patched(good, value_at, "<I", 99),
        f"offset {value_at}",
        "'test.arr_f32'",
        "unknown value type id 99",
    )


def test_duplicate_key(tmp_path, good):
    start, _, _ = key_offsets(good, "test.dup_bb")
    bad = good.replace(gguf_string("test.dup_bb"), gguf_string("test.dup_aa"))
    expect_error(tmp_path, bad, f"offset {start}", "duplicate metadata key 'test.dup_aa'")


def test_bool_must_be_0_or_1(tmp_path, good):
    _, _, value_at = key_offsets(good, "test.bool")
    expect_error(tmp_path, patched(good, value_at, "<B", 2), f"offset {value_at}", "'test.bool'", "found 2")


def test_bool_array_elements_must_be_0_or_1(tmp_path, good):
    _, _, value_at = key_offsets(good, "test.arr_bool")
    element_1 = value_at + 4 + 8 + 1
    expect_error(
        tmp_path,
        patched(good, element_1, "<B", 7),
        f"offset {element_1}",
        "'test.arr_bool'",
        "element 1",
    )


def test_invalid_utf8_in_a_key(tmp_path, good):
    start, _, _ = key_offsets(good, "test.str")
    bad = patched(good, start + 8 + 5, "<B", 0xFF)  # the "s" of "test.str"
    expect_error(tmp_path, bad, f"offset {start + 13}", "not valid UTF-8")


def test_invalid_utf8_in_a_string_array(tmp_path, good):
    _, _, value_at = key_offsets(good, "test.arr_str")
    second = value_at + 4 + 8 + (8 + 3) + 8  # first byte of "two"
    expect_error(
        tmp_path,
        patched(good, second, "<B", 0xC3),
        f"offset {second}",
        "'test.arr_str'",
        "string 1",
        "UTF-8",
    )


def test_arrays_nested_too_deep(tmp_path):
    depth = 50
    value = struct.pack("<IQ", int(V.ARRAY), 1) * (depth - 1) + struct.pack("<IQ", int(V.UINT8), 0)
    entry = gguf_string("deep") + struct.pack("<I", int(V.ARRAY)) + value
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + entry
    expect_error(tmp_path, data, "'deep'", "nesting depth", "MAX_ARRAY_NESTING")


# -- absurd counts and sizes: rejected before anything is allocated for them ----------------


def _count_cases(good: bytes) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    first_key = 24
    _, _, str_value = key_offsets(good, "test.str")
    _, _, f32_array = key_offsets(good, "test.arr_f32")
    _, _, str_array = key_offsets(good, "test.arr_str")
    record = tensor_record(good, "tensor_b")
    return {
        "kv_count": (patched(good, 16, "<Q", HUGE), ("offset 16", "kv_count", str(HUGE))),
        "tensor_count": (patched(good, 8, "<Q", HUGE), ("offset 8", "tensor_count")),
        "key length": (patched(good, first_key, "<Q", HUGE), ("offset 24", str(HUGE), "MAX_KEY_BYTES")),
        "string value length": (patched(good, str_value, "<Q", HUGE), ("'test.str'",)),
        "numeric array length": (
            patched(good, f32_array + 4, "<Q", HUGE),
            (f"offset {f32_array}", "'test.arr_f32'", str(HUGE)),
        ),
        "string array length": (
            patched(good, str_array + 4, "<Q", HUGE),
            (f"offset {str_array}", "'test.arr_str'", str(HUGE)),
        ),
        "string array element length": (
            patched(good, str_array + 12, "<Q", HUGE),
            ("'test.arr_str'", "string 0", str(HUGE)),
        ),
        "tensor dimension count": (
            patched(good, record["n_dims"], "<I", 2**31),
            (f"offset {record['n_dims']}", "'tensor_b'", "dimensions"),
        ),
        "tensor dimension": (
            patched(good, record["dims"] + 8, "<Q", HUGE),
            ("'tensor_b'", "past the end"),
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "kv_count",
        "tensor_count",
        "key length",
        "string value length",
        "numeric array length",
        "string array length",
        "string array element length",
        "tensor dimension count",
        "tensor dimension",
    ],
)
def test_absurd_counts_fail_without_allocating(tmp_path, good, case):
    data, fragments = _count_cases(good)[case]
    expect_error(tmp_path, data, *fragments)
    tracemalloc.start()
    try:
        for tensors_data in (True, False):
            with pytest.raises(GGUFFormatError):
                read_gguf(tmp_path / "bad.gguf", tensors_data=tensors_data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"{case}: peak {peak} bytes traced while failing"


def test_more_than_four_dimensions(tmp_path, good):
    record = tensor_record(good, "tensor_c")
    expect_error(
        tmp_path,
        patched(good, record["n_dims"], "<I", 5),
        f"offset {record['n_dims']}",
        "'tensor_c'",
        "5 dimensions",
        "at most 4",
    )


# -- the tensor index ---------------------------------------------------------------------


def test_duplicate_tensor_name(tmp_path, good):
    start = tensor_record(good, "tensor_b")["start"]
    bad = good.replace(gguf_string("tensor_b"), gguf_string("tensor_a"))
    expect_error(tmp_path, bad, f"offset {start}", "duplicate tensor name 'tensor_a'")


@pytest.mark.parametrize("type_id", [4, 5, 33, 99, 2**32 - 1])
def test_unknown_tensor_type_is_unsupported_quant(tmp_path, good, type_id):
    record = tensor_record(good, "tensor_b")
    expect_error(
        tmp_path,
        patched(good, record["type"], "<I", type_id),
        "'tensor_b'",
        f"type id {type_id}",
        error=UnsupportedQuantError,
    )


def test_inner_dimension_not_a_multiple_of_the_block_size(tmp_path, good):
    record = tensor_record(good, "tensor_b")  # Q8_0, ne0 = 64
    expect_error(
        tmp_path,
        patched(good, record["dims"], "<Q", 48),
        "'tensor_b'",
        "innermost dimension 48",
        "Q8_0 block size 32",
    )


def test_overlapping_tensors(tmp_path, good):
    record = tensor_record(good, "tensor_c")
    b_offset = data_offset_of(good, "tensor_b")
    bad = patched(good, record["offset"], "<Q", b_offset + 32)
    message = expect_error(tmp_path, bad, "overlaps", "'tensor_b'", "'tensor_c'")
    assert re.search(r"offset \d+", message)


def test_two_tensors_at_the_same_offset(tmp_path, good):
    record = tensor_record(good, "tensor_b")
    bad = patched(good, record["offset"], "<Q", data_offset_of(good, "tensor_a"))
    expect_error(tmp_path, bad, "overlaps", "'tensor_a'", "'tensor_b'")


@pytest.mark.parametrize("offset", [2**20, 2**40, 2**64 - 32])
def test_tensor_outside_the_file(tmp_path, good, offset):
    record = tensor_record(good, "tensor_a")
    expect_error(
        tmp_path,
        patched(good, record["offset"], "<Q", offset),
        "'tensor_a'",
        f"offset {record['start']}",
        "past the end",
    )


def test_misaligned_tensor_offset(tmp_path, good):
    record = tensor_record(good, "tensor_c")
    offset = data_offset_of(good, "tensor_c") + 8
    expect_error(
        tmp_path,
        patched(good, record["offset"], "<Q", offset),
        "'tensor_c'",
        f"data offset {offset}",
        "not a multiple of the alignment 32",
    )


@pytest.mark.parametrize("alignment", [0, 3, 48, 2**31 + 1])
def test_alignment_not_a_power_of_two(tmp_path, alignment):
    def add(writer):
        writer.add_uint32("general.alignment", alignment)

    good = write_small(tmp_path / "src.gguf", extra=add)
    expect_error(tmp_path, good, "'general.alignment'", "power of two", f"found {alignment}")


@pytest.mark.parametrize("vtype", [V.UINT64, V.INT32, V.STRING])
def test_alignment_of_the_wrong_type(tmp_path, vtype):
    def add(writer):
        writer.add_key_value("general.alignment", "32" if vtype == V.STRING else 32, vtype)

    good = write_small(tmp_path / "src.gguf", extra=add)
    expect_error(tmp_path, good, "'general.alignment'", "UINT32", vtype.name)


def test_tensor_offset_not_a_multiple_of_a_custom_alignment(tmp_path):
    def add(writer):
        writer.add_custom_alignment(256)

    good = write_small(tmp_path / "src.gguf", extra=add)
    record = tensor_record(good, "tensor_b")
    offset = data_offset_of(good, "tensor_b") + 128  # a multiple of 32, not of 256
    expect_error(
        tmp_path,
        patched(good, record["offset"], "<Q", offset),
        "'tensor_b'",
        "not a multiple of the alignment 256",
    )
