"""Fuzzing read_gguf: mutated valid files, and hostile headers built field by field.

Whatever the bytes, reading them (data mapped, and header-only) either works or raises
``GGUFFormatError`` / ``UnsupportedQuantError`` naming the file; never another exception,
never more than a few seconds, and never more memory than a small multiple of the file
size plus a constant. ``REALM_FUZZ_EXAMPLES`` sets how many files each test tries.
"""

from __future__ import annotations

import functools
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from realm.errors import GGUFFormatError, UnsupportedQuantError
from realm.gguf import GGUFValueType as V
from realm.gguf import read_gguf
from realm.gguf.limits import (
    MAX_ARRAY_STRING_BYTES,
    MAX_KEY_BYTES,
    MAX_METADATA_KEYS,
    MAX_NESTED_ARRAYS,
    MAX_STRING_VALUE_BYTES,
    MAX_TENSOR_NAME_BYTES,
    MAX_TENSORS,
)
from realm.testing import write_model
from tests.fuzzing import FUZZ_SETTINGS, bounded_memory, time_limit
from tests.gguf_samples import key_offsets, tensor_record, write_sample

pytestmark = pytest.mark.fuzz

# The reader may allocate this much per byte of file, plus a constant. The worst
# measured within the limits is ~9x (short non-ASCII strings, header-only); the rest is
# slack for the interpreter's own bookkeeping.
MEMORY_PER_BYTE = 16
MEMORY_CONSTANT = 2 << 20
# Small files parse in milliseconds; the bound only catches a loop or a hang, generously.
SECONDS = 20

# u64 values that have broken readers: the edges of realm's limits, of the file, of
# int64 and of uint64.
EDGES = sorted(
    {0, 1, 2, 7, 8, 12, 13, 24, 63, 255, 256, 1 << 16, 1 << 31, 1 << 32, 1 << 40, 1 << 62}
    | {2**63 - 1, 2**63, 2**64 - 1}
    | {limit + d for d in (-1, 0, 1) for limit in (
        MAX_ARRAY_STRING_BYTES, MAX_KEY_BYTES, MAX_METADATA_KEYS, MAX_NESTED_ARRAYS,
        MAX_STRING_VALUE_BYTES, MAX_TENSOR_NAME_BYTES, MAX_TENSORS,
    )}
)


def read_like_a_caller(path: Path) -> None:
    """Read ``path`` both ways and touch every value; only the two format errors may escape."""
    size = path.stat().st_size
    for tensors_data in (True, False):
        with time_limit(SECONDS), bounded_memory(MEMORY_PER_BYTE * size + MEMORY_CONSTANT):
            try:
                with read_gguf(path, tensors_data=tensors_data) as f:
                    for value in f.metadata.values():
                        check_value(value)
                    for name, info in f.tensors.items():
                        assert info.offset + info.nbytes <= size
                        if tensors_data:
                            assert f.tensor_data(name).nbytes == info.nbytes
            except (GGUFFormatError, UnsupportedQuantError) as exc:
                assert str(path) in str(exc)


def check_value(value: object) -> None:
    if isinstance(value, list):
        for item in value:
            check_value(item)
    else:
        assert isinstance(value, (bool, int, float, str, np.ndarray)), type(value)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_gguf") / "case.gguf"


# -- (a) mutations of small valid files ------------------------------------------------------


@functools.cache
def seed_files() -> dict[str, tuple[bytes, int, tuple[int, ...]]]:
    """name -> (bytes, end of the header, offsets of its length and count fields)."""
    seeds = {}
    with tempfile.TemporaryDirectory() as folder:
        model = write_model(
            Path(folder) / "model.gguf", n_layer=1, n_embd=32, n_head=2, n_head_kv=1, n_ff=64,
            n_vocab=300, n_ctx=64,
        )
        sample = write_sample(Path(folder) / "sample.gguf").path
        for path in (model, sample):
            with read_gguf(path) as f:
                data = path.read_bytes()
                seeds[path.stem] = (data, f.data_offset, count_fields(data, f))
    return seeds


def count_fields(data: bytes, f) -> tuple[int, ...]:
    """Where the counts, lengths, dimensions and offsets of ``data``'s header are."""
    fields = [8, 16]
    for key, value in f.metadata.items():
        start, _, value_at = key_offsets(data, key)
        fields.append(start)
        if isinstance(value, str):
            fields.append(value_at)
        elif isinstance(value, (list, np.ndarray)):
            fields.append(value_at + 4)
            if isinstance(value, list) and value and isinstance(value[0], str):
                fields.append(value_at + 12)  # the first string's length
    for name in f.tensors:
        record = tensor_record(data, name)
        fields += [record["start"], record["dims"], record["offset"]]
    return tuple(fields)


@st.composite
def mutated_files(draw) -> bytes:
    data, header_end, fields = seed_files()[draw(st.sampled_from(sorted(seed_files())))]
    raw = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "byte", "insert", "delete", "truncate", "field"]))
        # Mostly at or just after a field of the header, past the magic and version (which
        # stop the reader at once); rarely in the tensor data, which it does not check.
        where = draw(st.sampled_from(range(10)))
        if where < 7:
            at = draw(st.sampled_from(fields)) + draw(st.integers(0, 40))
        else:
            at = draw(st.integers(0, header_end if where < 9 else len(raw)))
        at = min(at, max(0, len(raw) - 1))
        if kind == "flip" and raw:
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del raw[at:]
        elif kind == "field":  # an edge value, noise, or one flipped bit (fields move on insert)
            field = draw(st.sampled_from(fields))
            if field + 8 <= len(raw):
                (old,) = struct.unpack_from("<Q", raw, field)
                flipped = st.integers(0, 63).map(lambda bit, old=old: old ^ (1 << bit))
                value = draw(st.sampled_from(EDGES) | st.integers(0, 2**64 - 1) | flipped)
                raw[field : field + 8] = struct.pack("<Q", value)
    return bytes(raw)


@FUZZ_SETTINGS
@given(data=mutated_files())
def test_mutated_valid_files(scratch, data):
    scratch.write_bytes(data)
    read_like_a_caller(scratch)


def test_the_seed_files_are_valid():
    # The mutations start from these: they must read, and have fields to overwrite.
    for data, header_end, fields in seed_files().values():
        assert 24 < header_end < len(data) and len(fields) > 20


# -- (b) hostile headers, field by field -----------------------------------------------------

SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
TYPE_IDS = st.sampled_from(list(range(13)) * 4 + [13, 255, 2**31, 2**32 - 1])


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (``st.integers`` favours its ends, this does not)."""
    return st.sampled_from([True] + [False] * (n - 1))


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


@st.composite
def claimed(draw, actual: int) -> int:
    """A length or count field: mostly the truth, else an edge, a near miss or noise."""
    kind = draw(st.sampled_from(range(20)))
    if kind < 16:
        return actual
    if kind < 18:
        return draw(st.sampled_from(EDGES))
    if kind < 19:
        return max(0, actual + draw(st.integers(-32, 32)))
    return draw(st.integers(0, 2**64 - 1))


@st.composite
def gguf_strings(draw, limit: int) -> bytes:
    """A length-prefixed string: short text, junk bytes, or one at the edge of ``limit``."""
    kind = draw(st.sampled_from(range(20)))
    if kind < 17:
        raw = draw(st.text(max_size=12)).encode()
    elif kind < 19:
        raw = draw(st.binary(max_size=12))
    else:
        raw = b"a" * min(draw(st.sampled_from([limit - 1, limit, limit + 1])), 1 << 17)
    return u64(draw(claimed(len(raw)))) + raw


@st.composite
def values(draw, type_id: int, depth: int) -> bytes:
    if type_id == V.BOOL:
        return draw(st.sampled_from([b"\0", b"\1", b"\0", b"\1", b"\2", b"\xff"]))
    if type_id in SCALAR_SIZES:
        return draw(st.binary(min_size=SCALAR_SIZES[type_id], max_size=SCALAR_SIZES[type_id]))
    if type_id == V.STRING:
        return draw(gguf_strings(MAX_STRING_VALUE_BYTES))
    if type_id != V.ARRAY:
        return draw(st.binary(max_size=8))  # an unknown type: whatever follows
    elem = draw(TYPE_IDS) if depth < 10 else draw(st.sampled_from([0, 8]))
    if elem == V.ARRAY and draw(one_in(5)):
        # Many empty sub-arrays, some over the file-wide limit (a file at the limit is slow
        # to read under tracemalloc; test_gguf_limits reads one).
        n = draw(st.sampled_from([100, MAX_NESTED_ARRAYS + 1]))
        return struct.pack("<IQ", elem, n) + struct.pack("<IQ", 0, 0) * n
    n = draw(st.integers(0, 5))
    if elem == V.STRING:
        items = [draw(gguf_strings(MAX_ARRAY_STRING_BYTES)) for _ in range(n)]
    else:
        items = [draw(values(elem, depth + 1)) for _ in range(n)]
    return struct.pack("<I", elem) + u64(draw(claimed(n))) + b"".join(items)


@st.composite
def metadata_entries(draw) -> bytes:
    type_id = draw(TYPE_IDS)
    return draw(gguf_strings(MAX_KEY_BYTES)) + struct.pack("<I", type_id) + draw(values(type_id, 0))


@st.composite
def tensor_records(draw) -> bytes:
    n_dims = draw(st.integers(0, 4) | st.sampled_from([5, 2**31, 2**32 - 1]))
    dim = st.sampled_from([0, 1, 2, 32, 64, 256]) | st.sampled_from(EDGES)
    dims = [draw(dim) for _ in range(min(n_dims, 6))]
    ggml_type = draw(st.sampled_from([0, 1, 2, 8, 12, 14, 30]) | st.integers(0, 2**32 - 1))
    offset = draw(st.integers(0, 64).map(lambda k: 32 * k) | st.sampled_from(EDGES))
    name = draw(gguf_strings(MAX_TENSOR_NAME_BYTES))
    return name + struct.pack("<I", n_dims) + b"".join(map(u64, dims)) + struct.pack("<IQ", ggml_type, offset)


@st.composite
def hostile_files(draw) -> bytes:
    entries = draw(st.lists(metadata_entries(), max_size=8))
    tensors = draw(st.lists(tensor_records(), max_size=6))
    if draw(one_in(10)):  # many minimal keys, around the limit
        n = draw(st.sampled_from([1000, MAX_METADATA_KEYS + 1]))
        entries += [u64(6) + b"k%05x" % i + struct.pack("<IB", 0, 0) for i in range(n)]
    if draw(one_in(10)):  # many zero-size tensors, around the limit
        n = draw(st.sampled_from([1000, MAX_TENSORS + 1]))
        tensors += [u64(7) + b"t%06x" % i + struct.pack("<IQIQ", 1, 0, 0, 0) for i in range(n)]
    version = draw(st.sampled_from([3] * 8 + [2, 1, 4]))
    header = b"GGUF" + struct.pack("<I", version)
    header += u64(draw(claimed(len(tensors)))) + u64(draw(claimed(len(entries))))
    body = header + b"".join(entries) + b"".join(tensors)
    padding = b"\0" * (-len(body) % 32)
    return body + padding + draw(st.binary(max_size=64)) + b"\0" * draw(st.sampled_from([0, 32, 4096]))


@FUZZ_SETTINGS
@given(data=hostile_files())
def test_hostile_headers(scratch, data):
    scratch.write_bytes(data)
    read_like_a_caller(scratch)
