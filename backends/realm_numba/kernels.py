"""Every compiled kernel of the backend in one namespace, and which kernel serves which type.

Importing this module imports numba (the backend class does so only when instantiated,
so probing the backend stays cheap). Compilation happens on first call, or is loaded
from numba's on-disk cache (see cache.py for where that is).
"""

from __future__ import annotations

import pathlib

from realm_numba.cache import drop_stale_kernels, ensure_cache_location, kernel_cache_dir

_PACKAGE = pathlib.Path(__file__).parent
ensure_cache_location(_PACKAGE)  # before numba's decorators look for a cache directory

from realm_numba.attention import attention_paged, attention_plan, rope_write_kv, set_rows  # noqa: E402
from realm_numba.dot_ir import unpacked_kind  # noqa: E402
from realm_numba.elementwise import (  # noqa: E402
    add,
    argmax_rows,
    copy_rows,
    count_nonfinite,
    geglu,
    rms_norm,
    rope,
    scale,
    swiglu,
)
from realm_numba.gemm import matmul_f32, matmul_quant  # noqa: E402
from realm_numba.gemm_q16 import matmul_q16  # noqa: E402
from realm_numba.int8_formats import FORMATS as INT8_FORMATS  # noqa: E402
from realm_numba.rows import DECODABLE, LANES, dequantize_rows, get_rows, take_rows  # noqa: E402
from realm_numba.step_kernel import run_step, run_step_quant  # noqa: E402

# Decorating a kernel only locates its cache; kernels load at their first call, so the
# stale ones can still be dropped here, in the directory numba actually uses.
drop_stale_kernels(_PACKAGE, kernel_cache_dir(matmul_quant, _PACKAGE))

__all__ = [
    "DECODABLE",
    "INT8_FORMATS",
    "LANES",
    "add",
    "argmax_rows",
    "attention_paged",
    "attention_plan",
    "copy_rows",
    "count_nonfinite",
    "dequantize_rows",
    "geglu",
    "get_rows",
    "matmul_f32",
    "matmul_q16",
    "matmul_quant",
    "rms_norm",
    "rope",
    "rope_write_kv",
    "run_step",
    "run_step_quant",
    "scale",
    "set_rows",
    "swiglu",
    "take_rows",
    "unpacked_kind",
]
