/* IQ1_S, IQ1_M: 1.5-bit importance quants; each 8 elements index a grid of -1/0/+1 values
 * (iq1s_grid: two uint32 words per entry of 8 signed bytes, generated from gguf-py) and the
 * value is dl * (grid + delta) with delta = +-1/8. */

/* IQ1_S: d @0, qs[32] @2 (grid index low bits), qh uint16[8] @34: per 32 elements, 3 high
 * index bits per 8 (bits 3w), a 3-bit scale (bits 12..14) and the delta's sign (bit 15). */
INLINE void dq_iq1_s(GLOBAL const uchar* b, int j, float* v) {
    const uint qh = u16_at(b + 34 + 2 * j);
    const float dl = f16_at(b) * (float)(2u * ((qh >> 12) & 7u) + 1u);
    const float delta = qh & 0x8000u ? -0.125f : 0.125f;
    for (int w = 0; w < 4; ++w) {
        const uint g = b[2 + 4 * j + w] | (((qh >> (3 * w)) & 7u) << 8);
        for (int e = 0; e < 8; ++e)
            v[8 * w + e] = dl * ((float)sext8(GRID8(iq1s_grid, g, e)) + delta);
    }
}

/* IQ1_M: qs[32] @0, qh[16] @32 (a nibble per 8 elements: 3 high index bits and the delta's
 * sign), scales uint16[4] @48: twelve bits of 3-bit scales (one per 16 elements) each, and the
 * block's float16 scale split over their top nibbles. */
INLINE void dq_iq1_m(GLOBAL const uchar* b, int j, float* v) {
    const uint s0 = u16_at(b + 48), s1 = u16_at(b + 50), s2 = u16_at(b + 52), s3 = u16_at(b + 54);
    const float d = f16_to_f32((s0 >> 12) | ((s1 >> 8) & 0xF0u) | ((s2 >> 4) & 0xF00u) |
                               (s3 & 0xF000u));
    for (int part = 0; part < 2; ++part) {
        const int i = 2 * j + part; /* which 3-bit scale */
        const uint sc = (u16_at(b + 48 + 2 * (i >> 2)) >> (3 * (i & 3))) & 7u;
        const float dl = d * (float)(2u * sc + 1u);
        for (int w = 0; w < 2; ++w) {
            const uint qh = (b[32 + i] >> (4 * w)) & 0xFu;
            const uint g = b[4 * j + 2 * part + w] | ((qh & 7u) << 8);
            const float delta = qh & 8u ? -0.125f : 0.125f;
            for (int e = 0; e < 8; ++e)
                v[16 * part + 8 * w + e] = dl * ((float)sext8(GRID8(iq1s_grid, g, e)) + delta);
        }
    }
}
