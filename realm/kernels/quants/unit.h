/* One entry point over every format: decode_unit(row, u, k, v) writes elements
 * [32u, 32u + 32) of a row of k elements into v, zero past the end of the row.
 *
 * The program for one GGML type defines, before this header:
 *   block formats: QK (elements per block), QBYTES (bytes per block), DQ_UNIT (its dq_ decoder);
 *   plain types:   Q_PLAIN, LD_ELEM (its ld_ loader).
 * Kernels written against decode_unit (dequantize, get_rows, matvec, tiled matmul) then serve
 * every format; 32 is the smallest block of any block format and divides all of them.
 */
#define UNIT 32

INLINE void decode_unit(GLOBAL const uchar* row, int u, int k, float* v) {
#ifdef Q_PLAIN
    for (int t = 0; t < UNIT; ++t) {
        const int i = UNIT * u + t;
        v[t] = i < k ? LD_ELEM(row, i) : 0.0f;
    }
#else
    DQ_UNIT(row + (long)(u / (QK / UNIT)) * QBYTES, u % (QK / UNIT), v);
#endif
}

/* Elements of unit u inside a row of k (32 except for the tail of a plain-type row). */
INLINE int unit_len(int u, int k) { return min(UNIT, k - UNIT * u); }

/* Element e of an activation slice that a unit of length len multiplies. Rows of block formats
 * are whole units, so only plain types check (and read zero past the end of the row). */
#ifdef Q_PLAIN
#define X_AT(xr, e, len) ((e) < (len) ? (xr)[e] : 0.0f)
#else
#define X_AT(xr, e, len) ((xr)[e])
#endif
