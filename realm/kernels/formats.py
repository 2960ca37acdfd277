"""Which decoder in ``quants/`` serves each GGML type, and the ``#define`` lines that select it.

A quant program (dequantize, get_rows, matvec, tiled matmul) is compiled once per GGML type:
the kernels call ``decode_unit`` (``quants/unit.h``), and these defines route it to the
type's decoder. Types with one element per "block" (F32, F16, ...) use element loaders.
"""

from __future__ import annotations

from dataclasses import dataclass

from realm.gguf.types import GGMLType, type_traits


@dataclass(frozen=True)
class KernelFormat:
    """How kernel code decodes one GGML type."""

    qtype: GGMLType
    header: str  # the family header under quants/, e.g. "quants/kquants.h"
    function: str  # dq_<type> (a 32-element unit decoder) or ld_<type> (one element)
    tables: tuple[str, ...] = ()  # generated tables its header reads (realm.kernels.tables)

    @property
    def plain(self) -> bool:
        """One element per block: decoded element by element, any row length."""
        return type_traits(self.qtype).block_size == 1

    def defines(self) -> str:
        """The ``#define`` lines that point ``decode_unit`` at this format."""
        traits = type_traits(self.qtype)
        if self.plain:
            return f"#define Q_PLAIN 1\n#define LD_ELEM {self.function}\n"
        return (
            f"#define QK {traits.block_size}\n#define QBYTES {traits.type_size}\n"
            f"#define DQ_UNIT {self.function}\n"
        )


def _formats(header: str, names: str, tables: tuple[str, ...] = (), prefix: str = "dq_"):
    return {
        GGMLType[n.upper()]: KernelFormat(GGMLType[n.upper()], header, prefix + n, tables)
        for n in names.split()
    }


# The generated tables each family header reads (all of them: the header is compiled whole).
_FP4 = ("kvalues_mxfp4", "kvalues_iq4nl")
_IQ2 = ("iq2xxs_grid", "iq2xs_grid", "iq2s_grid", "ksigns_iq2xs")
_IQ3 = ("iq3xxs_grid", "iq3s_grid", "ksigns_iq2xs")

#: Every GGML type the kernels can decode, with its decoder.
FORMATS: dict[GGMLType, KernelFormat] = {
    **_formats("quants/plain.h", "f32 f16 bf16 f64 i8 i16 i32 i64", prefix="ld_"),
    **_formats("quants/legacy.h", "q4_0 q4_1 q5_0 q5_1 q8_0"),
    **_formats("quants/kquants.h", "q2_k q3_k q4_k q5_k q6_k"),
    **_formats("quants/ternary.h", "tq1_0 tq2_0"),
    **_formats("quants/fp4.h", "mxfp4 nvfp4 iq4_nl iq4_xs", _FP4),
    **_formats("quants/iq2.h", "iq2_xxs iq2_xs iq2_s", _IQ2),
    **_formats("quants/iq3.h", "iq3_xxs iq3_s", _IQ3),
    **_formats("quants/iq1.h", "iq1_s iq1_m", ("iq1s_grid",)),
}
