/* Ternary formats (values -1, 0, +1 times one scale per 256): TQ1_0, TQ2_0. */

/* TQ1_0: qs[48] @0, qh[4] @48, d @52. Each byte packs five (qh: four) base-3 digits: the
 * digit for power p is ((byte * 3^p mod 256) * 3) >> 8. Element e comes from
 *   e < 160: qs[e % 32], p = e / 32;  e < 240: qs[32 + (e - 160) % 16], p = (e - 160) / 16;
 *   else:    qh[(e - 240) % 4], p = (e - 240) / 4. */
INLINE float tq1_0_trit(GLOBAL const uchar* b, int e) {
    uint byte;
    int p;
    if (e < 160) {
        byte = b[e & 31];
        p = e >> 5;
    } else if (e < 240) {
        byte = b[32 + ((e - 160) & 15)];
        p = (e - 160) >> 4;
    } else {
        byte = b[48 + ((e - 240) & 3)];
        p = (e - 240) >> 2;
    }
    const uint pow3 = p == 0 ? 1u : p == 1 ? 3u : p == 2 ? 9u : p == 3 ? 27u : 81u;
    const uint q = (byte * pow3) & 0xFFu;
    return (float)((int)((q * 3u) >> 8) - 1);
}

INLINE void dq_tq1_0(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b + 52);
    for (int l = 0; l < 32; ++l) v[l] = d * tq1_0_trit(b, 32 * j + l);
}

/* TQ2_0: qs[64] @0 (2 bits: byte 32h + l, bits 2i, is element 128h + 32i + l, minus 1), d @64. */
INLINE void dq_tq2_0(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b + 64);
    GLOBAL const uchar* qs = b + 32 * (j >> 2);
    const int shift = 2 * (j & 3);
    for (int l = 0; l < 32; ++l) v[l] = d * (float)((int)((qs[l] >> shift) & 3u) - 1);
}
