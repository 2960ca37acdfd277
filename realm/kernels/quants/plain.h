/* Plain (unblocked) types: one element per "block", read one element at a time.
 *
 * ld_<type>(row, i) returns element i of a row as float32, with the bits numpy's astype gives.
 */

/* Rows of F32, F16 and BF16 start on element boundaries (whole buffers, or float32 arrays
 * used as weights), so these three read through typed pointers; the rest assemble bytes. */
INLINE float ld_f32(GLOBAL const uchar* row, int i) {
    return AS_FLOAT(((GLOBAL const uint*)row)[i]);
}

INLINE float ld_f16(GLOBAL const uchar* row, int i) {
    return f16_to_f32(((GLOBAL const ushort*)row)[i]);
}

/* bfloat16 is the upper half of a float32: a shift, so NaN payloads and subnormals survive. */
INLINE float ld_bf16(GLOBAL const uchar* row, int i) {
    return AS_FLOAT((uint)((GLOBAL const ushort*)row)[i] << 16);
}

INLINE float ld_i8(GLOBAL const uchar* row, int i) { return (float)sext8(row[i]); }

INLINE float ld_i16(GLOBAL const uchar* row, int i) {
    return (float)((int)(u16_at(row + 2 * i) ^ 0x8000u) - 0x8000);
}

/* int32 / int64 to float round to nearest even, as numpy's casts do. */
INLINE float ld_i32(GLOBAL const uchar* row, int i) { return (float)(int)u32_at(row + 4 * i); }

INLINE ulong u64_at(GLOBAL const uchar* p) {
    return (ulong)u32_at(p) | ((ulong)u32_at(p + 4) << 32);
}

INLINE float ld_i64(GLOBAL const uchar* row, int i) { return (float)(long)u64_at(row + 8 * i); }

/* float64 to float32 with round-to-nearest-even, in integer arithmetic so that devices
 * without double support decode F64 tensors too, bit for bit as numpy's cast. */
INLINE float ld_f64(GLOBAL const uchar* row, int i) {
    const ulong bits = u64_at(row + 8 * i);
    const uint sign = (uint)(bits >> 32) & 0x80000000u;
    const int exp = (int)((bits >> 52) & 0x7FF);
    const ulong man = bits & 0xFFFFFFFFFFFFFul;
    if (exp == 0x7FF) /* inf, or NaN keeping the top of its payload and made quiet */
        return AS_FLOAT(sign | 0x7F800000u | (man != 0 ? 0x400000u | (uint)(man >> 29) : 0u));
    if (exp == 0) return AS_FLOAT(sign); /* double subnormals are far below float's range */
    const ulong sig = man | (1ul << 52); /* 53 significant bits */
    int fexp = exp - 1023 + 127;         /* float exponent field if the result is normal */
    const int shift = fexp >= 1 ? 29 : 29 + 1 - fexp;
    if (shift > 54) return AS_FLOAT(sign); /* rounds to zero */
    ulong kept = sig >> shift;
    const ulong rest = sig & ((1ul << shift) - 1);
    const ulong halfway = 1ul << (shift - 1);
    if (rest > halfway || (rest == halfway && (kept & 1))) kept += 1;
    if (fexp < 1) return AS_FLOAT(sign | (uint)kept); /* subnormal, or rounded up to the
                                                         smallest normal: same encoding */
    if (kept == (1ul << 24)) { kept >>= 1; fexp += 1; }
    if (fexp >= 255) return AS_FLOAT(sign | 0x7F800000u);
    return AS_FLOAT(sign | ((uint)fexp << 23) | ((uint)kept & 0x7FFFFFu));
}
