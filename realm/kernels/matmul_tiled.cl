/* Tiled matrix product for prefill: out[n, m] = x[n, k] @ w[m, k]^T, w in any format.
 *
 * A work-group of MM_SIDE x MM_SIDE work-items computes a MM_TILE x MM_TILE block of out
 * (MM_TILE weight rows by MM_TILE rows of x); each work-item owns an MM_PER x MM_PER
 * micro-tile of adjacent rows and columns. k advances one 32-element unit at a time: each of
 * the first MM_TILE work-items (all of them, at 64 x 64) decodes one unit of one weight row
 * into local memory, all of them stage the matching slice of x, and each decoded weight is
 * then used MM_TILE times from local memory.
 * Local tiles are stored transposed ([element][row]) so that a work-item's MM_PER operands are
 * adjacent: one vector load on GPUs, vectorizable arithmetic on CPUs.
 */
#define MM_TILE 64
#define MM_SIDE 8
#define MM_PER (MM_TILE / MM_SIDE)
/* Row pitch of the local tiles: the padding spreads the transposing writes of x over more
 * local-memory banks while every row stays 16-byte aligned for vector reads. */
#define MM_PITCH (MM_TILE + 4)

KERNEL void matmul_tiled(BUF(const uchar, w), const long row_bytes, const int k, const int m,
                         BUF(const float, x), const int n, BUF(float, out)) {
    BIND(const uchar, w);
    BIND(const float, x);
    BIND(float, out);
    LOCAL float wt[UNIT * MM_PITCH]; /* wt[e * MM_PITCH + r]: element e of weight row m0 + r */
    LOCAL float xt[UNIT * MM_PITCH]; /* xt[e * MM_PITCH + r]: element e of x row n0 + r */
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
            for (int e = 0; e < UNIT; ++e) wt[e * MM_PITCH + lid] = v[e];
        }
        for (int i = lid; i < MM_TILE * UNIT; i += MM_SIDE * MM_SIDE) {
            const int rr = i / UNIT, c = i % UNIT, col = UNIT * u + c;
            xt[c * MM_PITCH + rr] = n0 + rr < n && col < k ? x[(long)(n0 + rr) * k + col] : 0.0f;
        }
        BARRIER();
        for (int e = 0; e < UNIT; ++e) {
            float a[MM_PER], b[MM_PER];
            for (int i = 0; i < MM_PER; ++i) a[i] = xt[e * MM_PITCH + MM_PER * ty + i];
            for (int j = 0; j < MM_PER; ++j) b[j] = wt[e * MM_PITCH + MM_PER * tx + j];
            for (int i = 0; i < MM_PER; ++i)
                for (int j = 0; j < MM_PER; ++j) acc[i][j] = MAD(a[i], b[j], acc[i][j]);
        }
        BARRIER();
    }
    for (int i = 0; i < MM_PER; ++i) {
        const int row = n0 + MM_PER * ty + i;
        for (int j = 0; j < MM_PER; ++j) {
            const int col = m0 + MM_PER * tx + j;
            if (row < n && col < m) out[(long)row * m + col] = acc[i][j];
        }
    }
}
