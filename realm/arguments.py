"""Argument checks for realm's public entry points, written once.

`realm.load`, `Model`, `Tokenizer`, `SamplingParams` and the backends take their arguments
through these functions, so every bad value gets the same kind of answer: an
`InvalidParameterError` (a `RealmError` and a `ValueError`) that names the parameter, what was
expected and what was found. numpy integers are accepted wherever Python ints are; bools,
floats and strings are never taken for integers.

>>> check_int("max_tokens", np.int64(8), minimum=1)
8
>>> check_int("max_tokens", 8.0, minimum=1)
Traceback (most recent call last):
...
realm.errors.InvalidParameterError: max_tokens must be an integer >= 1, got 8.0 (float)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from realm.errors import InvalidParameterError


def _found(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def is_int(value: Any) -> bool:
    """A Python or numpy integer, and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A real, non-NaN Python or numpy number, and not a bool."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and not math.isnan(float(value))
    )


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
    hint: str = "",
) -> int | None:
    """``value`` as a Python int within ``[minimum, maximum]`` (or None when allowed)."""
    if value is None and allow_none:
        return None
    expected = f"an integer{_range_text(minimum, maximum)}{' or None' if allow_none else ''}"
    if not is_int(value) or (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        raise InvalidParameterError(f"{name} must be {expected}, got {_found(value)}{hint}")
    return int(value)


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(
            f"{name} must be True or False{' or None' if allow_none else ''}, got {_found(value)}"
        )
    return bool(value)


def check_text(name: str, value: Any) -> str:
    """A str that encodes to UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        raise InvalidParameterError(f"{name} must be a str, got {_found(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidParameterError(
            f"{name} has a lone surrogate {value[exc.start]!r} at index {exc.start}, which is not "
            "valid Unicode text; decode your bytes with errors='replace' or remove it"
        ) from None
    return value


def check_token_ids(name: str, ids: Any, n_vocab: int, *, allow_empty: bool = False) -> list[int]:
    """A list of Python ints in ``[0, n_vocab)`` from a sequence or 1-D array of integers."""
    plain = type(ids) is list and ids and all(type(v) is int for v in ids)
    if plain and min(ids) >= 0 and max(ids) < n_vocab:
        return list(ids)  # the common case (a decode step's token): plain ints, in range
    if isinstance(ids, (str, bytes, bytearray, memoryview)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise InvalidParameterError(
            f"{name} must be a list of integer token ids, got {_found(ids)}"
            + ("; pass text as a str" if isinstance(ids, (bytes, bytearray)) else "")
        )
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise InvalidParameterError(
                f"{name} must be a 1-D array of integer token ids, got {ids.dtype} shape {ids.shape}"
            )
        out = ids.astype(np.int64).tolist()
    else:
        out = []
        for i, v in enumerate(ids):
            if not is_int(v):
                raise InvalidParameterError(f"{name}[{i}] must be an integer token id, got {_found(v)}")
            out.append(int(v))
    if not out and not allow_empty:
        raise InvalidParameterError(f"{name} is empty: give at least one token id")
    bad = [i for i in out if not 0 <= i < n_vocab]
    if bad:
        raise InvalidParameterError(
            f"{name} has ids {bad[:5]}{' ...' if len(bad) > 5 else ''} outside the vocabulary "
            f"[0, {n_vocab})"
        )
    return out


def check_stop(stop: Any) -> list[str]:
    """``stop``: None, a string or a list of non-empty strings."""
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return []
    if not isinstance(stops, (list, tuple)):
        raise InvalidParameterError(f"stop must be a string or a list of strings, got {_found(stop)}")
    for i, s in enumerate(stops):
        where = "stop" if isinstance(stop, str) else f"stop[{i}]"
        check_text(where, s)
        if not s:
            raise InvalidParameterError(f"{where} is an empty string, which would match everywhere")
    return list(stops)
