/* The OpenCL spelling of realm's kernel dialect.
 *
 * Kernel bodies and quant decoders are written once against these macros, so that a CUDA
 * prelude (planned, not shipped yet) can define the same names for NVRTC. Rules the shared
 * sources follow:
 *  - buffers are declared with BUF(type, name) and bound with BIND(type, name): OpenCL passes a
 *    base buffer plus an element offset (views of leading rows, x[r0:r1], have an offset and
 *    sub-buffers would need alignment); a CUDA runtime would pass the offset pointer itself;
 *  - local scratch is LOCAL, private arrays are plain C arrays;
 *  - floating-point contraction is off, so a*b+c rounds twice exactly as numpy does. The
 *    dequantizers must be bit-exact; today's formats multiply float16 scales by small integers,
 *    which is exact in float32 either way, but exactness should not rest on that analysis for
 *    every future format. Hot loops that may fuse ask for it with MAD(). (For NVRTC: --fmad=false.)
 */
#pragma OPENCL FP_CONTRACT OFF

#define KERNEL __kernel
#define GLOBAL __global
#define LOCAL __local
/* The address space of a pointer to LOCAL scratch, as a helper function's parameter (CUDA:
 * empty; LOCAL itself would be __shared__ there, which only declares). */
#define LOCAL_PTR __local
#define CONSTANT __constant
#define INLINE static inline
#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE)

#define GID(x) ((int)get_global_id(x))
#define LID(x) ((int)get_local_id(x))
#define GROUP(x) ((int)get_group_id(x))
#define LSIZE(x) ((int)get_local_size(x))

#define BUF(T, name) GLOBAL T* name##_base, const long name##_off
#define BIND(T, name) GLOBAL T* name = name##_base + name##_off

#define AS_FLOAT(u) as_float((uint)(u))
#define AS_UINT(f) as_uint(f)
/* a*b+c, fused where the device is faster that way (accumulations only, never decoders). */
#define MAD(a, b, c) mad((a), (b), (c))
