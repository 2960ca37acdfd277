"""Kernel sources in one C dialect, and the host layer that runs them on any device runtime.

The host layer (checks, launch geometry, program selection) is `device_backend.DeviceBackend`
over a `runtime.DeviceRuntime` (allocate, copy, compile, launch); see docs/architecture.md.

Files (package data, read with `importlib.resources`):

- ``prelude_opencl.h``: the runtime's spelling of the dialect (``KERNEL``, ``GLOBAL``,
  ``LOCAL``, ``BARRIER()``, ``GID(x)``, ``LID(x)``, ``BUF``/``BIND`` for buffers, ``MAD``...);
  the planned CUDA backend will define the same names in a prelude of its own for NVRTC.
- ``quants/*.h``: one ``static inline`` decoder per GGML format, grouped by family;
  ``quants/unit.h`` routes ``decode_unit`` to the decoder a program was built for.
- ``*.cl``: kernel bodies written against the prelude (dequantize/get_rows, matvec, tiled
  matmul, attention, rows, element-wise ops).

Programs are assembled as text (``#line`` markers keep compiler messages pointing at the
right file), so neither runtime needs an include path.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from realm.errors import UnsupportedQuantError
from realm.gguf.types import GGMLType
from realm.kernels.formats import FORMATS, KernelFormat
from realm.kernels.tables import table_source

__all__ = ["FORMATS", "KernelFormat", "attention_program", "quant_program", "read", "rows_program"]


@functools.cache
def read(name: str) -> str:
    """The text of one kernel source file, e.g. ``read("quants/kquants.h")``."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def _with_line(name: str) -> str:
    return f'#line 1 "{name}"\n{read(name)}\n'


def _program(prelude: str, defines: str, parts: list[str]) -> str:
    return _with_line(prelude) + defines + "".join(parts)


def quant_program(qtype: GGMLType, prelude: str) -> str:
    """Source of the per-type program: dequantize, get_rows, matvec and matmul_tiled."""
    fmt = FORMATS.get(GGMLType(qtype))
    if fmt is None:
        raise UnsupportedQuantError(f"no kernel decoder for GGML type {GGMLType(qtype).name}")
    parts = [_with_line("quants/common.h")]
    parts += [f'#line 1 "generated:{t}"\n{table_source(t)}' for t in fmt.tables]
    parts += [_with_line(fmt.header), _with_line("quants/unit.h")]
    parts += [_with_line(body) for body in ("dequant.cl", "matvec.cl", "matmul_tiled.cl")]
    return _program(prelude, fmt.defines(), parts)


def rows_program(prelude: str) -> str:
    """Source of rms_norm, rope, swiglu, geglu, add, scale and set_rows."""
    return _program(prelude, "", [_with_line("rows.cl"), _with_line("elementwise.cl")])


def attention_program(prelude: str, head_dim_max: int) -> str:
    """Source of the dense and paged attention kernels for head dims up to `head_dim_max` (a power of two)."""
    return _program(prelude, f"#define ATT_HD_MAX {int(head_dim_max)}\n",
                    [_with_line("attention.cl")])
