"""Upper bounds on what one GGUF header may ask the reader to build.

The parser already rejects any length or count that could not fit in the rest of the
file. That is not enough: a small record can cost far more in Python objects than it
takes on disk (a 12-byte empty array becomes a ~110-byte numpy array, a 13-byte metadata
entry a key string and two dict slots), and one corrupt length that still fits in the
file would turn megabytes of tensor data into a "string". With these limits the reader
allocates at most about ten times the header bytes it consumes (measured worst case:
short non-ASCII strings), the costliest records are also capped in number, and a flipped
bit in a length field fails at that field instead of far downstream.

Each value is above what any real model uses (the figures in the comments) and, where
the GGUF spec sets a bound, no looser than the spec. A file over a limit gets a
``GGUFFormatError`` that names the limit.
"""

from __future__ import annotations

# Metadata entries in one file. Real models carry 20 to 100 (both test models: 33); at
# the limit the key strings and dicts take about 2 MB.
MAX_METADATA_KEYS = 1 << 14

# Tensor records in one file. The largest released models carry about two thousand
# (Llama 3.1 405B: 1138; DeepSeek-V3 and Qwen3-235B merge their experts into 3-D
# tensors); at the limit the tensor index takes about 20 MB.
MAX_TENSORS = 1 << 16

# Bytes in a metadata key. The GGUF spec caps keys at 2**16 - 1 bytes; real keys are
# under 64 (e.g. 'gemma3.attention.layer_norm_rms_epsilon').
MAX_KEY_BYTES = (1 << 16) - 1

# Bytes in a tensor name. The GGUF spec caps names at 64 bytes, and llama.cpp rejects a
# name of 64 or more since ggml keeps it NUL-terminated in char[GGML_MAX_NAME = 64].
MAX_TENSOR_NAME_BYTES = 64

# Bytes in one metadata string value. The longest in real files are chat templates of a
# few KB up to ~100 KB; 16 MiB also leaves room for the spec's optional
# 'tokenizer.huggingface.json' of a mid-sized vocabulary.
MAX_STRING_VALUE_BYTES = 16 << 20

# Bytes in one string of a string array: a token, a BPE merge ("left right"), a tag or a
# language. The longest token in the test models is 162 bytes (SmolLM2) and 48 (gemma 3);
# this catches a corrupt length in a 262144-string vocabulary after at most 64 KiB.
MAX_ARRAY_STRING_BYTES = 1 << 16

# Strings in string arrays, summed over the whole file. Each string costs 6-9 times its
# bytes on disk as a Python ``str`` in a list, so this caps that cost at ~400 MB. The
# largest real total is under 600k (a 256k-token BPE vocabulary and its merges; gemma 3:
# 262144 tokens, no merges); 4M leaves room for a 2M-token vocabulary with merges.
MAX_ARRAY_STRINGS = 1 << 22

# How deep arrays may nest. llama.cpp rejects arrays of arrays outright and no converter
# writes them; realm reads gguf-py's nested lists but stops a file from recursing without
# end through 12-byte array headers.
MAX_ARRAY_NESTING = 8

# Arrays inside other arrays, summed over the whole file. Each is a Python list or numpy
# array of ~60-110 bytes made from a 12-byte record, so their number, not the file size,
# has to bound them; real models have none.
MAX_NESTED_ARRAYS = 1 << 12


def limit_message(what: str, found: int, unit: str, name: str, limit: int) -> str:
    """The text of an over-limit error: what was found, the limit by name, what to do."""
    found_text = f"{found} {unit}".rstrip()
    limit_text = f"{limit} {unit}".rstrip()
    return (
        f"{what} is {found_text}; expected at most {limit_text} "
        f"(realm.gguf.limits.{name}; no real model needs more), so the field is corrupt or "
        "the file is hostile: re-download or re-convert the model"
    )
