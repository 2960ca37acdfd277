/* Byte readers and scalar conversions shared by every block decoder.
 *
 * GGML blocks are packed structs with no alignment guarantee (a Q5_0 block is 22 bytes, its
 * uint32 high bits start at byte 2), so multi-byte fields are assembled from bytes,
 * little-endian, never read through a wider pointer.
 */

INLINE uint u16_at(GLOBAL const uchar* p) { return (uint)p[0] | ((uint)p[1] << 8); }

INLINE uint u32_at(GLOBAL const uchar* p) { return u16_at(p) | (u16_at(p + 2) << 16); }

/* Sign-extend the low byte of b (int8 fields, signed grid tables) without relying on the
 * signedness of `char`, which differs between runtimes. */
INLINE int sext8(uint b) { return (int)((b & 0xFFu) ^ 0x80u) - 0x80; }

/* IEEE half bits to float, exactly as numpy's float16 -> float32 cast: subnormals become
 * normal floats, inf stays inf, NaN keeps its payload. Integer code, so no runtime's
 * half-conversion instruction or denormal mode can change a bit. */
INLINE float f16_to_f32(uint h) {
    const uint sign = (h & 0x8000u) << 16;
    const uint exp = (h >> 10) & 0x1Fu;
    const uint man = h & 0x3FFu;
    if (exp == 0x1Fu) return AS_FLOAT(sign | 0x7F800000u | (man << 13));
    if (exp != 0u) return AS_FLOAT(sign | ((exp + 112u) << 23) | (man << 13));
    /* zero or subnormal: man * 2^-24 is exact in float32 */
    return AS_FLOAT(sign | AS_UINT((float)man * 5.9604644775390625e-8f));
}

INLINE float f16_at(GLOBAL const uchar* p) { return f16_to_f32(u16_at(p)); }

/* Byte k of entry g of a generated grid table: 8-byte entries are stored as two uint32 words,
 * 4-byte entries as one (tables are plain uint32 arrays, so no runtime needs 64-bit loads). */
#define GRID8(table, g, k) ((table[2 * (g) + ((k) >> 2)] >> (8 * ((k) & 3))) & 0xFFu)
#define GRID4(table, g, k) ((table[(g)] >> (8 * (k))) & 0xFFu)
