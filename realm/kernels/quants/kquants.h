/* K-quants: 256-element super-blocks with 6- or 8-bit sub-block scales.
 *
 * dq_<type>(b, j, v) writes elements [32j, 32j + 32) of the super-block (j = 0..7), following
 * gguf-py's numpy decoders operation by operation (dl * q - ml rounds twice, never fused).
 * Layouts from ggml-common.h; comments give the byte offsets inside one block.
 */

/* Q2_K: scales[16] @0 (low nibble scale, high nibble min, one pair per 16 elements),
 * qs[64] @16 (2 bits: byte 32h + l, bits 2i, is element 128h + 32i + l), d @80, dmin @82. */
INLINE void dq_q2_k(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b + 80), dmin = f16_at(b + 82);
    GLOBAL const uchar* qs = b + 16 + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
    for (int part = 0; part < 2; ++part) {
        const uint sc = b[2 * j + part];
        const float dl = d * (float)(sc & 0xFu), ml = dmin * (float)(sc >> 4);
        for (int l = 16 * part; l < 16 * part + 16; ++l)
            v[l] = dl * (float)((qs[l] >> shift) & 3u) - ml;
    }
}

/* Q3_K: hmask[32] @0 (bit j of byte l is the inverted high bit of element 32j + l),
 * qs[64] @32 (low 2 bits as in Q2_K), scales[12] @96 (16 six-bit scales), d @108. */
INLINE int q3_k_scale(GLOBAL const uchar* sc, int s) {
    const uint low = s < 8 ? (sc[s] & 0xFu) : (sc[s - 8] >> 4);
    const uint high = (sc[8 + (s & 3)] >> (2 * (s >> 2))) & 3u;
    return (int)(low | (high << 4)) - 32;
}

INLINE void dq_q3_k(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b + 108);
    GLOBAL const uchar* qs = b + 32 + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
    for (int part = 0; part < 2; ++part) {
        const float dl = d * (float)q3_k_scale(b + 96, 2 * j + part);
        for (int l = 16 * part; l < 16 * part + 16; ++l) {
            const int low = (int)((qs[l] >> shift) & 3u);
            const int high_clear = (int)(((b[l] >> j) & 1u) ^ 1u);
            v[l] = dl * (float)(low - (high_clear << 2));
        }
    }
}

/* Q4_K / Q5_K scales: 8 six-bit (scale, min) pairs packed in 12 bytes (get_scale_min_k4). */
INLINE void k4_scale_min(GLOBAL const uchar* sc, int s, uint* scale, uint* min) {
    if (s < 4) {
        *scale = sc[s] & 63u;
        *min = sc[s + 4] & 63u;
    } else {
        *scale = (sc[s + 4] & 0xFu) | ((sc[s - 4] >> 2) & 0x30u);
        *min = (sc[s + 4] >> 4) | ((sc[s] >> 2) & 0x30u);
    }
}

/* Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16 (byte 32c + l: element 64c + l in the low
 * nibble, 64c + 32 + l in the high). */
INLINE void dq_q4_k(GLOBAL const uchar* b, int j, float* v) {
    uint sc, mn;
    k4_scale_min(b + 4, j, &sc, &mn);
    const float dl = f16_at(b) * (float)sc, ml = f16_at(b + 2) * (float)mn;
    GLOBAL const uchar* qs = b + 16 + 32 * (j >> 1);
    const int shift = 4 * (j & 1);
    for (int l = 0; l < 32; ++l) v[l] = dl * (float)((qs[l] >> shift) & 0xFu) - ml;
}

/* Q5_K: as Q4_K with qh[32] @16 (bit j of byte l is the fifth bit of element 32j + l) and
 * qs[128] @48. */
INLINE void dq_q5_k(GLOBAL const uchar* b, int j, float* v) {
    uint sc, mn;
    k4_scale_min(b + 4, j, &sc, &mn);
    const float dl = f16_at(b) * (float)sc, ml = f16_at(b + 2) * (float)mn;
    GLOBAL const uchar* qs = b + 48 + 32 * (j >> 1);
    const int shift = 4 * (j & 1);
    for (int l = 0; l < 32; ++l) {
        const uint q = ((qs[l] >> shift) & 0xFu) | (((b[16 + l] >> j) & 1u) << 4);
        v[l] = dl * (float)q - ml;
    }
}

/* Q6_K: ql[128] @0 (byte 64h + l: element 128h + l low nibble, 128h + 64 + l high), qh[64]
 * @128 (byte 32h + l, bits 2i: element 128h + 32i + l), scales int8[16] @192, d @208. */
INLINE void dq_q6_k(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b + 208);
    const int h = j >> 2, i = j & 3;
    GLOBAL const uchar* ql = b + 64 * h + 32 * (i & 1);
    GLOBAL const uchar* qh = b + 128 + 32 * h;
    const int ql_shift = 4 * (i >> 1);
    for (int part = 0; part < 2; ++part) {
        const float dl = d * (float)sext8(b[192 + 2 * j + part]);
        for (int l = 16 * part; l < 16 * part + 16; ++l) {
            const uint q = ((ql[l] >> ql_shift) & 0xFu) | (((qh[l] >> (2 * i)) & 3u) << 4);
            v[l] = dl * (float)((int)q - 32);
        }
    }
}
