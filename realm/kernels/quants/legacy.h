/* The original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
 *
 * Every decoder in quants/ has the same shape: dq_<type>(b, j, v) writes elements
 * [32j, 32j + 32) of the block at b into v[0..31]. Blocks of 32 have one such unit (j = 0).
 * Arithmetic follows gguf-py's numpy decoders operation by operation (d * q, then + m), so
 * results are bit-identical to the reference.
 *
 * The 4-bit layout: byte l holds element l in its low nibble and element l + 16 in its high.
 */

INLINE void dq_q4_0(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b);
    for (int l = 0; l < 16; ++l) {
        const uint q = b[2 + l];
        v[l] = d * (float)((int)(q & 0xFu) - 8);
        v[l + 16] = d * (float)((int)(q >> 4) - 8);
    }
}

INLINE void dq_q4_1(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b), m = f16_at(b + 2);
    for (int l = 0; l < 16; ++l) {
        const uint q = b[4 + l];
        v[l] = d * (float)(q & 0xFu) + m;
        v[l + 16] = d * (float)(q >> 4) + m;
    }
}

/* Q5: the fifth bit of element i is bit i of the 32-bit qh field. */
INLINE void dq_q5_0(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b);
    const uint qh = u32_at(b + 2);
    for (int l = 0; l < 16; ++l) {
        const uint q = b[6 + l];
        v[l] = d * (float)((int)((q & 0xFu) | (((qh >> l) & 1u) << 4)) - 16);
        v[l + 16] = d * (float)((int)((q >> 4) | (((qh >> (l + 16)) & 1u) << 4)) - 16);
    }
}

INLINE void dq_q5_1(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b), m = f16_at(b + 2);
    const uint qh = u32_at(b + 4);
    for (int l = 0; l < 16; ++l) {
        const uint q = b[8 + l];
        v[l] = d * (float)((q & 0xFu) | (((qh >> l) & 1u) << 4)) + m;
        v[l + 16] = d * (float)((q >> 4) | (((qh >> (l + 16)) & 1u) << 4)) + m;
    }
}

INLINE void dq_q8_0(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b);
    for (int l = 0; l < 32; ++l) v[l] = (float)sext8(b[2 + l]) * d;
}
