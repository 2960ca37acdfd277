"""Every GGML type the cpu backend runs: one class each, holding what decodes it.

A format is a subclass of `Format` naming its ``ggml`` type; defining it registers it
(``__init_subclass__``), with its block size and block bytes taken from gguf's type table.
It holds:

- ``decode``: its exact decoder, bit-identical to ``gguf.quants.dequantize``: of one block,
  ``(src, o, dst, do)``, or for the plain types (``whole_rows``) of a whole row, ``(src, dst,
  *row_args)``;
- ``matmul_decode``: optionally, the float matmul's vectorized row decoder ``(src, dst,
  lanes)`` (matvec.py) and its ``lanes`` (the bytes its inner loop walks);
- for the integer matmul, its quants and scales as LLVM IR: the formats in int8_formats.py,
  whose base class `Int8Format` is a `Format`.

The types below are the ones no integer kernel unpacks; int8_formats.py defines the others
(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS, Q4_K, Q5_K, Q6_K). Adding a format, or a
faster decoder for one, is a class or an attribute here or there: the backend's type
tables and the compiled dispatch over every type (`dispatch`, used by rows.py) follow
from the registry.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any, ClassVar

from gguf.constants import GGML_QUANT_SIZES

from realm.gguf.types import GGMLType
from realm_numba import decode_iquants as iq
from realm_numba import decode_kquants as kq
from realm_numba import decode_simple as sq
from realm_numba import matvec as mv

# kernel source: `dispatch` writes compiled functions from these classes (cache.py reads this)
FORMATS: dict[int, type[Format]] = {}  # every registered format, by GGML type id


class Format:
    """One GGML type's decoders; subclasses that set ``ggml`` register themselves."""

    ggml: ClassVar[GGMLType]
    block_values: ClassVar[int]  # values per block (1 for the plain types)
    block_bytes: ClassVar[int]
    decode: ClassVar[Callable[..., None]]
    whole_rows: ClassVar[bool] = False  # ``decode`` takes a whole row: (src, dst, *row_args)
    row_args: ClassVar[tuple[int, ...]] = ()
    matmul_decode: ClassVar[Callable[..., None] | None] = None
    lanes: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "ggml" in cls.__dict__:  # a format, not a family of them
            cls.block_values, cls.block_bytes = GGML_QUANT_SIZES[cls.ggml]
            FORMATS[int(cls.ggml)] = cls


def dispatch(name: str, signature: str, source: Callable[[type[Format], Callable[[Any], str]], str | None],
             jit: Callable[[Callable], Any], module: str, fallback: str = "pass",
             known: dict[str, Any] | None = None) -> Any:
    """A compiled function ``name(code, <signature>)`` that runs, for GGML type ``code``, the
    statements ``source(format, use)`` writes (``use(obj)`` names a function or value for
    them), and ``fallback`` for the types it writes nothing for; ``known`` are more names the
    statements may use.

    numba resolves a call by its callee at compile time, so a table of functions cannot be
    indexed at run time: this writes the ``if code == ...`` chain that would otherwise be
    kept by hand next to the registry. The function is compiled as if defined in ``module``
    (and its file), where numba caches it; cache.py drops the cached kernels whenever a
    kernel source changes, this registry included.
    """
    namespace: dict[str, Any] = {"__name__": module, **(known or {})}

    def use(value: Any) -> str:
        key = f"_f{len(namespace)}"
        namespace[key] = value
        return key

    lines = [f"def {name}(code, {signature}):"]
    keyword = "if"
    for code, fmt in sorted(FORMATS.items()):
        body = source(fmt, use)
        if body is None:
            continue
        lines.append(f"    {keyword} code == {code}:  # {fmt.ggml.name}")
        lines += [f"        {line}" for line in body.splitlines()]
        keyword = "elif"
    lines += ["    else:", f"        {fallback}"]
    filename = pathlib.Path(__file__).with_name(module.rsplit(".", 1)[-1] + ".py")
    exec(compile("\n".join(lines) + "\n", str(filename), "exec"), namespace)  # noqa: S102 - text written here
    return jit(namespace[name])


# ----------------------------------------------------------------------------- plain types


class F32(Format):
    ggml = GGMLType.F32
    decode = staticmethod(sq.decode_f32_row)
    whole_rows = True


class F16(Format):
    ggml = GGMLType.F16
    decode = staticmethod(sq.decode_f16_row)
    whole_rows = True
    matmul_decode = staticmethod(mv.f16_row)


class BF16(Format):
    ggml = GGMLType.BF16
    decode = staticmethod(sq.decode_bf16_row)
    whole_rows = True
    matmul_decode = staticmethod(mv.bf16_row)


class F64(Format):
    ggml = GGMLType.F64
    decode = staticmethod(sq.decode_f64_row)
    whole_rows = True


class _Integers(Format):
    """Little-endian signed integers of ``block_bytes`` bytes, as float32."""

    decode = staticmethod(sq.decode_int_row)
    whole_rows = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.row_args = (cls.block_bytes,)


class I8(_Integers):
    ggml = GGMLType.I8


class I16(_Integers):
    ggml = GGMLType.I16


class I32(_Integers):
    ggml = GGMLType.I32


class I64(_Integers):
    ggml = GGMLType.I64


# ----------------------------------------------------------------------------- block types
# Those without an integer kernel: the float matmul decodes them with their exact decoder.


class Q2_K(Format):
    ggml = GGMLType.Q2_K
    decode = staticmethod(kq.decode_q2_k)


class Q3_K(Format):
    ggml = GGMLType.Q3_K
    decode = staticmethod(kq.decode_q3_k)


class TQ1_0(Format):
    ggml = GGMLType.TQ1_0
    decode = staticmethod(kq.decode_tq1_0)


class TQ2_0(Format):
    ggml = GGMLType.TQ2_0
    decode = staticmethod(kq.decode_tq2_0)


class IQ2_XXS(Format):
    ggml = GGMLType.IQ2_XXS
    decode = staticmethod(iq.decode_iq2_xxs)


class IQ2_XS(Format):
    ggml = GGMLType.IQ2_XS
    decode = staticmethod(iq.decode_iq2_xs)


class IQ2_S(Format):
    ggml = GGMLType.IQ2_S
    decode = staticmethod(iq.decode_iq2_s)


class IQ3_XXS(Format):
    ggml = GGMLType.IQ3_XXS
    decode = staticmethod(iq.decode_iq3_xxs)


class IQ3_S(Format):
    ggml = GGMLType.IQ3_S
    decode = staticmethod(iq.decode_iq3_s)


class IQ1_S(Format):
    ggml = GGMLType.IQ1_S
    decode = staticmethod(iq.decode_iq1_s)


class IQ1_M(Format):
    ggml = GGMLType.IQ1_M
    decode = staticmethod(iq.decode_iq1_m)


class MXFP4(Format):
    ggml = GGMLType.MXFP4
    decode = staticmethod(sq.decode_mxfp4)


class NVFP4(Format):
    ggml = GGMLType.NVFP4
    decode = staticmethod(sq.decode_nvfp4)
