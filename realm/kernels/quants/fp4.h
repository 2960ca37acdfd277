/* 4-bit formats that index a table of 16 values: MXFP4, NVFP4, IQ4_NL, IQ4_XS.
 *
 * kvalues_mxfp4 (E2M1 values, doubled) and kvalues_iq4nl are generated from gguf-py's tables
 * and prepended to the program (see realm/kernels/tables.py).
 */

/* E8M0 exponent to float, halved to undo the doubled kvalues (ggml_e8m0_to_fp32_half). */
INLINE float e8m0_half(uint e) {
    return AS_FLOAT(e < 2u ? 0x00200000u << e : (e - 1u) << 23);
}

/* MXFP4: e @0, qs[16] @1 (byte l: element l low nibble, l + 16 high). */
INLINE void dq_mxfp4(GLOBAL const uchar* b, int j, float* v) {
    const float d = e8m0_half(b[0]);
    for (int l = 0; l < 16; ++l) {
        const uint q = b[1 + l];
        v[l] = d * (float)kvalues_mxfp4[q & 0xFu];
        v[l + 16] = d * (float)kvalues_mxfp4[q >> 4];
    }
}

/* Unsigned E4M3 sub-block scale, halved for the doubled kvalues; 0 and 0x7F decode to 0. */
INLINE float ue4m3_half(uint x) {
    if (x == 0u || x == 0x7Fu) return 0.0f;
    const uint exp = (x >> 3) & 0xFu, man = x & 7u;
    if (exp == 0u) return (float)man * 9.765625e-4f; /* man * 2^-9 * 0.5, exact */
    return AS_FLOAT(((exp + 119u) << 23) | (man << 20)); /* (1 + man/8) * 2^(exp-7) * 0.5 */
}

/* NVFP4: 64 elements; d[4] @0 (one UE4M3 scale per 16), qs[32] @4 (sub-block s: byte 8s + l
 * holds element 16s + l low nibble and 16s + 8 + l high). Unit j covers sub-blocks 2j, 2j+1. */
INLINE void dq_nvfp4(GLOBAL const uchar* b, int j, float* v) {
    for (int part = 0; part < 2; ++part) {
        const int s = 2 * j + part;
        const float d = ue4m3_half(b[s]);
        for (int l = 0; l < 8; ++l) {
            const uint q = b[4 + 8 * s + l];
            v[16 * part + l] = d * (float)kvalues_mxfp4[q & 0xFu];
            v[16 * part + 8 + l] = d * (float)kvalues_mxfp4[q >> 4];
        }
    }
}

/* IQ4_NL: d @0, qs[16] @2, laid out as Q4_0 but each nibble indexes kvalues_iq4nl. */
INLINE void dq_iq4_nl(GLOBAL const uchar* b, int j, float* v) {
    const float d = f16_at(b);
    for (int l = 0; l < 16; ++l) {
        const uint q = b[2 + l];
        v[l] = d * (float)kvalues_iq4nl[q & 0xFu];
        v[l + 16] = d * (float)kvalues_iq4nl[q >> 4];
    }
}

/* IQ4_XS: d @0, scales_h (uint16, 2 bits per sub-block) @2, scales_l[4] @4 (a nibble per
 * sub-block), qs[128] @8 (sub-block j: byte 16j + l holds element l low, l + 16 high). */
INLINE void dq_iq4_xs(GLOBAL const uchar* b, int j, float* v) {
    const uint low = (b[4 + (j >> 1)] >> (4 * (j & 1))) & 0xFu;
    const uint high = (u16_at(b + 2) >> (2 * j)) & 3u;
    const float dl = f16_at(b) * (float)((int)(low | (high << 4)) - 32);
    GLOBAL const uchar* qs = b + 8 + 16 * j;
    for (int l = 0; l < 16; ++l) {
        v[l] = dl * (float)kvalues_iq4nl[qs[l] & 0xFu];
        v[l + 16] = dl * (float)kvalues_iq4nl[qs[l] >> 4];
    }
}
