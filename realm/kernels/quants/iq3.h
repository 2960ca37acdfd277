/* IQ3_XXS, IQ3_S: 3-bit importance quants; each 4 elements index a 4-value grid.
 *
 * iq3xxs_grid and iq3s_grid (one uint32 per 4-byte entry) and ksigns_iq2xs are generated from
 * gguf-py's tables.
 */

/* IQ3_XXS: d @0, qs[64] @2 (grid indices, 8 per 32 elements), then per 32 elements one
 * uint32 @66 + 4j: four 7-bit sign indices (bits 7k) and a 4-bit scale (bits 28..31). */
INLINE void dq_iq3_xxs(GLOBAL const uchar* b, int j, float* v) {
    const uint aux = u32_at(b + 66 + 4 * j);
    const float db = f16_at(b) * (0.5f + (float)(aux >> 28)) * 0.5f;
    for (int k = 0; k < 4; ++k) {
        const uint signs = ksigns_iq2xs[(aux >> (7 * k)) & 127u];
        for (int e = 0; e < 8; ++e) {
            const uint g = b[2 + 8 * j + 2 * k + (e >> 2)];
            const float val = db * (float)GRID4(iq3xxs_grid, g, e & 3);
            v[8 * k + e] = (signs >> e) & 1u ? -val : val;
        }
    }
}

/* IQ3_S: d @0, qs[64] @2 (grid index low bits), qh[8] @66 (bit w of byte j: ninth index bit of
 * word 8j + w), signs[32] @74 (one bit per element), scales[4] @106 (a nibble per 32). */
INLINE void dq_iq3_s(GLOBAL const uchar* b, int j, float* v) {
    const uint sc = (b[106 + (j >> 1)] >> (4 * (j & 1))) & 0xFu;
    const float db = f16_at(b) * (float)(1u + 2u * sc);
    for (int t = 0; t < 32; ++t) {
        const int w = t >> 2;
        const uint g = b[2 + 8 * j + w] | (((b[66 + j] >> w) & 1u) << 8);
        const float val = db * (float)GRID4(iq3s_grid, g, t & 3);
        v[t] = (b[74 + 4 * j + (t >> 3)] >> (t & 7)) & 1u ? -val : val;
    }
}
