"""The reader's limits (realm.gguf.limits): memory stays proportional to the header.

Each file here is one the reader once turned into far more memory than its size, or a
corrupt length it trusted because it still fit in the file. Every case is read with the
data mapped and header-only, must fail with a GGUFFormatError naming the limit and the
offset, and must allocate almost nothing while failing.
"""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType as V

from realm.errors import GGUFFormatError
from realm.gguf import read_gguf
from realm.gguf.limits import (
    MAX_ARRAY_STRING_BYTES,
    MAX_ARRAY_STRINGS,
    MAX_KEY_BYTES,
    MAX_METADATA_KEYS,
    MAX_NESTED_ARRAYS,
    MAX_STRING_VALUE_BYTES,
    MAX_TENSOR_NAME_BYTES,
    MAX_TENSORS,
)
from tests.fuzzing import bounded_memory
from tests.gguf_samples import gguf_string, key_offsets, patched, tensor_record

# What a rejected file may allocate: messages and a few small objects, nothing sized by
# the bad field or the number of records.
FAILING_PEAK = 256 * 1024


def header(tensor_count: int, kv_count: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count)


def read_both_ways(path, limit: int = FAILING_PEAK) -> list[str]:
    """The error message of each read (mapped, header-only); each may allocate ``limit``."""
    messages = []
    for tensors_data in (True, False):
        with bounded_memory(limit), pytest.raises(GGUFFormatError) as info:
            read_gguf(path, tensors_data=tensors_data)
        message = str(info.value)
        assert str(path) in message
        messages.append(message)
    assert messages[0] == messages[1]
    return messages


def expect_limit(tmp_path, data: bytes, *fragments: str, peak: int = FAILING_PEAK) -> str:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    message = read_both_ways(path, peak)[0]
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- nested empty arrays --------------------------------------------------------------------


def nested_empty_arrays(n: int) -> bytes:
    """One key holding ``n`` empty UINT8 arrays: 12 bytes each on disk."""
    outer = struct.pack("<IIQ", int(V.ARRAY), int(V.ARRAY), n)
    return header(0, 1) + gguf_string("nest") + outer + struct.pack("<IQ", int(V.UINT8), 0) * n


def test_nested_empty_arrays_over_the_limit_fail_before_allocating(tmp_path):
    # 300000 sub-arrays: 3.6 MB that the reader once turned into ~40 MB of numpy arrays.
    data = nested_empty_arrays(300_000)
    at = len(header(0, 1) + gguf_string("nest")) + 4
    expect_limit(tmp_path, data, f"offset {at}", "'nest'", "300000", "MAX_NESTED_ARRAYS")


def test_nested_arrays_up_to_the_limit_are_read(tmp_path):
    path = tmp_path / "nested.gguf"
    data = nested_empty_arrays(MAX_NESTED_ARRAYS)
    path.write_bytes(data)
    with bounded_memory(16 * len(data) + (1 << 20)), read_gguf(path) as f:
        value = f.metadata["nest"]
        assert len(value) == MAX_NESTED_ARRAYS and value[-1].dtype == np.uint8 and not value[-1].size


def test_the_nested_array_limit_counts_the_whole_file(tmp_path):
    half = MAX_NESTED_ARRAYS // 2 + 1
    entry = struct.pack("<IIQ", int(V.ARRAY), int(V.ARRAY), half) + struct.pack("<IQ", int(V.UINT8), 0) * half
    data = header(0, 2) + gguf_string("a") + entry + gguf_string("b") + entry
    # Key 'a' is within the limit and built (~0.3 MB) before 'b' takes the total over.
    expect_limit(tmp_path, data, "'b'", "MAX_NESTED_ARRAYS", str(2 * half), peak=1 << 20)


# -- many metadata keys ----------------------------------------------------------------------


def many_keys(n: int) -> bytes:
    entries = b"".join(gguf_string(f"{i:x}") + struct.pack("<IB", int(V.UINT8), 0) for i in range(n))
    return header(0, n) + entries


def test_more_keys_than_the_limit_fail_at_the_count(tmp_path):
    # Every entry is present: the count is not refuted by the file size, only by the limit.
    n = MAX_METADATA_KEYS + 1
    expect_limit(tmp_path, many_keys(n), "offset 16", "kv_count", str(n), "MAX_METADATA_KEYS")


def test_keys_up_to_the_limit_are_read(tmp_path):
    path = tmp_path / "keys.gguf"
    data = many_keys(MAX_METADATA_KEYS)
    path.write_bytes(data)
    with bounded_memory(32 * len(data) + (1 << 20)), read_gguf(path, tensors_data=False) as f:
        assert len(f.metadata) == MAX_METADATA_KEYS


# -- many tensor records ---------------------------------------------------------------------


def zero_size_tensors(n: int) -> bytes:
    record = struct.pack("<IQIQ", 1, 0, int(gguf.GGMLQuantizationType.F32), 0)
    return header(n, 0) + b"".join(gguf_string(f"t{i:x}") + record for i in range(n))


def test_more_tensors_than_the_limit_fail_at_the_count(tmp_path):
    # Zero-size records are valid one by one; the reader once built all of them (600 MB
    # for 1.7 million) before finding anything wrong.
    n = MAX_TENSORS + 1
    expect_limit(tmp_path, zero_size_tensors(n), "offset 8", "tensor_count", str(n), "MAX_TENSORS")


def test_tensor_names_longer_than_the_spec_allows(tmp_path):
    name = "t" * (MAX_TENSOR_NAME_BYTES + 1)
    record = struct.pack("<IQIQ", 1, 8, int(gguf.GGMLQuantizationType.F32), 0)
    data = header(1, 0) + gguf_string(name) + record + bytes(64)
    expect_limit(tmp_path, data, "offset 24", "tensor 0", f"{len(name)} bytes", "MAX_TENSOR_NAME_BYTES")


# -- a corrupt string length that still fits in the file -------------------------------------


def vocab_then_data(path, n_tokens: int = 300, data_bytes: int = 2 << 20) -> bytes:
    """A vocabulary followed by ``data_bytes`` of tensor data (zeros: valid UTF-8)."""
    writer = gguf.GGUFWriter(path, arch="testarch")
    writer.add_token_list([f"tok{i}" for i in range(n_tokens)])
    writer.add_tensor("weight", np.zeros(data_bytes // 4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def token_length_offset(data: bytes, index: int) -> int:
    _, _, value_at = key_offsets(data, "tokenizer.ggml.tokens")
    at = value_at + 4 + 8
    for _ in range(index):
        at += 8 + struct.unpack_from("<Q", data, at)[0]
    return at


@pytest.mark.parametrize("bit", [20, 40])
def test_a_flipped_bit_in_a_token_length_fails_at_that_token(tmp_path, bit):
    good = vocab_then_data(tmp_path / "good.gguf")
    at = token_length_offset(good, 100)
    (length,) = struct.unpack_from("<Q", good, at)
    bad = patched(good, at, "<Q", length | (1 << bit))
    # Bit 20 still fits in the file: it used to be copied and decoded as a 1 MiB token.
    assert bit != 20 or at + 8 + (length | (1 << bit)) < len(bad)
    expect_limit(
        tmp_path,
        bad,
        f"offset {at}",
        "'tokenizer.ggml.tokens'",
        "string 100",
        f"{length | (1 << bit)} bytes",
        f"{MAX_ARRAY_STRING_BYTES} bytes",
        "MAX_ARRAY_STRING_BYTES",
    )


def test_a_token_at_the_limit_is_read(tmp_path):
    path = tmp_path / "long.gguf"
    writer = gguf.GGUFWriter(path, arch="testarch")
    writer.add_token_list(["a", "é" * (MAX_ARRAY_STRING_BYTES // 2), "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with read_gguf(path) as f:
        tokens = f.metadata["tokenizer.ggml.tokens"]
        assert len(tokens[1].encode()) == MAX_ARRAY_STRING_BYTES and tokens[2] == "b"


def test_more_strings_than_the_limit_fail_before_reading_them(tmp_path):
    # Empty strings are 8 bytes each on disk; the limit is on their number, summed over
    # the file, because each becomes a Python object (at best a list slot).
    first = 10
    second = MAX_ARRAY_STRINGS - first + 1
    arrays = [struct.pack("<IIQ", int(V.ARRAY), int(V.STRING), n) + bytes(8 * n) for n in (first, second)]
    data = header(0, 2) + gguf_string("a") + arrays[0] + gguf_string("b") + arrays[1]
    at = len(header(0, 2) + gguf_string("a") + arrays[0] + gguf_string("b")) + 4
    message = expect_limit(tmp_path, data, f"offset {at}", "'b'", "MAX_ARRAY_STRINGS")
    assert f"the {second} of this array and {first} before it" in message


def test_a_key_longer_than_the_spec_allows(tmp_path):
    key = "k" * (MAX_KEY_BYTES + 1)
    data = header(0, 1) + gguf_string(key) + struct.pack("<IB", int(V.UINT8), 0)
    expect_limit(tmp_path, data, "offset 24", "metadata entry 0", f"{len(key)} bytes", "MAX_KEY_BYTES")


def test_a_string_value_over_the_limit(tmp_path):
    # The length is honest and the bytes are all there: only the limit refuses them.
    text = b"x" * (MAX_STRING_VALUE_BYTES + 1)
    data = header(0, 1) + gguf_string("big") + struct.pack("<IQ", int(V.STRING), len(text)) + text
    at = len(header(0, 1) + gguf_string("big")) + 4
    expect_limit(tmp_path, data, f"offset {at}", "'big'", "MAX_STRING_VALUE_BYTES")


def test_a_chat_template_sized_string_is_read(tmp_path):
    path = tmp_path / "template.gguf"
    writer = gguf.GGUFWriter(path, arch="testarch")
    template = "{% for m in messages %}{{ m.content }}{% endfor %}" * 4000  # ~200 KB
    writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with read_gguf(path, tensors_data=False) as f:
        assert f.get("tokenizer.chat_template") == template


def test_a_corrupt_key_length_names_its_field(tmp_path):
    good = vocab_then_data(tmp_path / "good.gguf", data_bytes=1 << 20)
    start, _, _ = key_offsets(good, "tokenizer.ggml.tokens")
    bad = patched(good, start, "<Q", MAX_KEY_BYTES + 1)
    expect_limit(tmp_path, bad, f"offset {start}", "the key of metadata entry", "MAX_KEY_BYTES")


def test_the_error_for_a_tensor_name_points_at_its_record(tmp_path):
    good = vocab_then_data(tmp_path / "good.gguf", data_bytes=1 << 20)
    start = tensor_record(good, "weight")["start"]
    bad = patched(good, start, "<Q", 1000)
    expect_limit(tmp_path, bad, f"offset {start}", "tensor 0", "1000 bytes", "MAX_TENSOR_NAME_BYTES")
