"""Every compiled kernel of the backend in one namespace, and which kernel serves which type.

Importing this module imports numba (the backend class does so only when instantiated,
so probing the backend stays cheap). Compilation happens on first call, or is loaded
from numba's on-disk cache (see cache.py for where that is).
"""

from __future__ import annotations

import pathlib

import numpy as np

from realm.gguf.types import GGMLType
from realm_numba.cache import drop_stale_kernels, ensure_cache_location, kernel_cache_dir

_PACKAGE = pathlib.Path(__file__).parent
ensure_cache_location(_PACKAGE)  # before numba's decorators look for a cache directory

from realm_numba import matvec as mv  # noqa: E402
from realm_numba.attention import (  # noqa: E402
    attention_paged,
    attention_parallel,
    attention_serial,
    set_rows,
)
from realm_numba.elementwise import add, copy_rows, geglu, rms_norm, rope, scale, swiglu  # noqa: E402
from realm_numba.gemm import gemm_f32, gemm_quant  # noqa: E402
from realm_numba.matvec import matvec_f32  # noqa: E402
from realm_numba.rows import DECODABLE, dequantize_rows, get_rows, matvec_generic, take_rows  # noqa: E402

# Decorating a kernel only locates its cache; kernels load at their first call, so the
# stale ones can still be dropped here, in the directory numba actually uses.
drop_stale_kernels(_PACKAGE, kernel_cache_dir(mv.matvec_q4_0, _PACKAGE))

# Types with a fused decode kernel: (kernel, lanes, dtype to view the raw rows as).
# Every other decodable type goes through `matvec_generic` (decode a row, then dot).
FAST_MATVEC = {
    GGMLType.F32: (mv.matvec_f32, 0, np.float32),
    GGMLType.F16: (mv.matvec_f16, 0, np.uint16),
    GGMLType.BF16: (mv.matvec_bf16, 0, np.uint16),
    GGMLType.Q4_0: (mv.matvec_q4_0, 16, None),
    GGMLType.Q4_1: (mv.matvec_q4_1, 16, None),
    GGMLType.Q5_0: (mv.matvec_q5_0, 16, None),
    GGMLType.Q5_1: (mv.matvec_q5_1, 16, None),
    GGMLType.Q8_0: (mv.matvec_q8_0, 32, None),
    GGMLType.Q4_K: (mv.matvec_q4_k, 32, None),
    GGMLType.Q5_K: (mv.matvec_q5_k, 32, None),
    GGMLType.Q6_K: (mv.matvec_q6_k, 32, None),
}

__all__ = [
    "DECODABLE", "FAST_MATVEC", "add", "attention_paged", "attention_parallel", "attention_serial",
    "copy_rows",
    "dequantize_rows", "geglu", "gemm_f32", "gemm_quant", "get_rows", "matvec_f32",
    "matvec_generic", "rms_norm", "rope", "scale", "set_rows", "swiglu", "take_rows",
]
