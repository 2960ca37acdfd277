/* IQ2_XXS, IQ2_XS, IQ2_S: 2-bit "importance" quants; each 8 elements index an 8-value grid
 * (values 8, 25, 43) and carry 8 sign bits.
 *
 * The grids (iq2xxs_grid, iq2xs_grid, iq2s_grid: two uint32 words per 8-byte entry) and
 * ksigns_iq2xs are generated from gguf-py's tables and prepended to the program. As in gguf-py,
 * a value is (db * grid) * sign, with db = (d * (0.5 + scale)) * 0.25.
 */

/* IQ2_XXS: d @0, then per 32 elements two uint32: aux0 = four grid indices (bytes),
 * aux1 = four 7-bit sign indices into ksigns (bits 7k) and a 4-bit scale (bits 28..31). */
INLINE void dq_iq2_xxs(GLOBAL const uchar* b, int j, float* v) {
    const uint aux0 = u32_at(b + 2 + 8 * j), aux1 = u32_at(b + 6 + 8 * j);
    const float db = f16_at(b) * (0.5f + (float)(aux1 >> 28)) * 0.25f;
    for (int k = 0; k < 4; ++k) {
        const uint g = (aux0 >> (8 * k)) & 0xFFu;
        const uint signs = ksigns_iq2xs[(aux1 >> (7 * k)) & 127u];
        for (int e = 0; e < 8; ++e) {
            const float val = db * (float)GRID8(iq2xxs_grid, g, e);
            v[8 * k + e] = (signs >> e) & 1u ? -val : val;
        }
    }
}

/* IQ2_XS: d @0, qs uint16[32] @2 (9-bit grid index, 7-bit sign index), scales[8] @66 (a nibble
 * per 16 elements). */
INLINE void dq_iq2_xs(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b);
    for (int part = 0; part < 2; ++part) {
        const float db = d * (0.5f + (float)((b[66 + j] >> (4 * part)) & 0xFu)) * 0.25f;
        for (int w = 0; w < 2; ++w) {
            const uint q = u16_at(b + 2 + 2 * (4 * j + 2 * part + w));
            const uint signs = ksigns_iq2xs[q >> 9];
            for (int e = 0; e < 8; ++e) {
                const float val = db * (float)GRID8(iq2xs_grid, q & 511u, e);
                v[16 * part + 8 * w + e] = (signs >> e) & 1u ? -val : val;
            }
        }
    }
}

/* IQ2_S: d @0, qs[32] @2 (grid index low bits), signs[32] @34 (one bit per element),
 * qh[8] @66 (2 high index bits per 8 elements), scales[8] @74 (a nibble per 16 elements). */
INLINE void dq_iq2_s(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b);
    for (int part = 0; part < 2; ++part) {
        const float db = d * (0.5f + (float)((b[74 + j] >> (4 * part)) & 0xFu)) * 0.25f;
        for (int w = 0; w < 2; ++w) {
            const int word = 4 * j + 2 * part + w;
            const uint g = b[2 + word] | (((b[66 + j] >> (2 * (2 * part + w))) & 3u) << 8);
            const uint signs = b[34 + word];
            for (int e = 0; e < 8; ++e) {
                const float val = db * (float)GRID8(iq2s_grid, g, e);
                v[16 * part + 8 * w + e] = (signs >> e) & 1u ? -val : val;
            }
        }
    }
}
