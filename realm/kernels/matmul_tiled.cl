/* Tiled matrix product for prefill: out[n, m] = x[n, k] @ w[m, k]^T, w in any format.
 *
 * A work-group of MM_SIDE x MM_SIDE work-items computes a MM_TILE x MM_TILE block of out
 * (MM_TILE weight rows by MM_TILE rows of x); each work-item owns an MM_PER x MM_PER
 * micro-tile, strided by MM_SIDE so that neighbouring work-items write neighbouring columns.
 * k advances one 32-element unit at a time: MM_TILE work-items decode one unit of one weight
 * row each into local memory, all of them stage the matching slice of x, and each decoded
 * weight is then used MM_TILE times from local memory.
 */
#define MM_TILE 32
#define MM_SIDE 8
#define MM_PER (MM_TILE / MM_SIDE)
#define MM_PITCH (UNIT + 1) /* padding: columns of a tile fall in different local banks */

KERNEL void matmul_tiled(BUF(const uchar, w), const long row_bytes, const int k, const int m,
                         BUF(const float, x), const int n, BUF(float, out)) {
    BIND(const uchar, w);
    BIND(const float, x);
    BIND(float, out);
    LOCAL float wt[MM_TILE * MM_PITCH];
    LOCAL float xt[MM_TILE * MM_PITCH];
    const int tx = LID(0), ty = LID(1), lid = ty * MM_SIDE + tx;
    const int m0 = GROUP(0) * MM_TILE, n0 = GROUP(1) * MM_TILE;
    float acc[MM_PER][MM_PER];
    for (int i = 0; i < MM_PER; ++i)
        for (int j = 0; j < MM_PER; ++j) acc[i][j] = 0.0f;
    const int n_units = (k + UNIT - 1) / UNIT;
    for (int u = 0; u < n_units; ++u) {
        if (lid < MM_TILE) {
            float v[UNIT];
            if (m0 + lid < m) {
                decode_unit(w + (long)(m0 + lid) * row_bytes, u, k, v);
            } else {
                for (int e = 0; e < UNIT; ++e) v[e] = 0.0f;
            }
            for (int e = 0; e < UNIT; ++e) wt[lid * MM_PITCH + e] = v[e];
        }
        for (int i = lid; i < MM_TILE * UNIT; i += MM_SIDE * MM_SIDE) {
            const int rr = i / UNIT, c = i % UNIT, col = UNIT * u + c;
            xt[rr * MM_PITCH + c] = n0 + rr < n && col < k ? x[(long)(n0 + rr) * k + col] : 0.0f;
        }
        BARRIER();
        for (int e = 0; e < UNIT; ++e) {
            float a[MM_PER], b[MM_PER];
            for (int i = 0; i < MM_PER; ++i) a[i] = xt[(ty + MM_SIDE * i) * MM_PITCH + e];
            for (int j = 0; j < MM_PER; ++j) b[j] = wt[(tx + MM_SIDE * j) * MM_PITCH + e];
            for (int i = 0; i < MM_PER; ++i)
                for (int j = 0; j < MM_PER; ++j) acc[i][j] = MAD(a[i], b[j], acc[i][j]);
        }
        BARRIER();
    }
    for (int i = 0; i < MM_PER; ++i) {
        const int row = n0 + ty + MM_SIDE * i;
        for (int j = 0; j < MM_PER; ++j) {
            const int col = m0 + tx + MM_SIDE * j;
            if (row < n && col < m) out[(long)row * m + col] = acc[i][j];
        }
    }
}
