/* Matrix-vector product straight from quantized weights, for decode (n <= MV_NX rows of x):
 * out[n, m] = x[n, k] @ w[m, k]^T.
 *
 * Each weight row is read once, by `tpr` work-items that stride over its 32-element units
 * (decoded into registers and dotted with all n rows of x at once), then combined by a tree
 * reduction in local memory. A work-group of MV_WG work-items covers MV_WG / tpr rows; the
 * host picks tpr (a power of two <= MV_WG) close to the number of units in a row, so short
 * rows (k = 576 is 18 units) do not leave most of the group idle. Dimension 1 steps over x
 * in groups of MV_NX rows.
 */
#define MV_WG 64
#define MV_NX 4

KERNEL void matvec(BUF(const uchar, w), const long row_bytes, const int k, const int m,
                   BUF(const float, x), const int n, BUF(float, out), const int tpr) {
    BIND(const uchar, w);
    BIND(const float, x);
    BIND(float, out);
    LOCAL float partial[MV_NX * MV_WG];
    const int lid = LID(0);
    const int t = lid & (tpr - 1);
    const int r = GROUP(0) * (MV_WG / tpr) + lid / tpr;
    const int x0 = GROUP(1) * MV_NX;
    const int nx = min(MV_NX, n - x0);
    float acc[MV_NX];
    for (int j = 0; j < MV_NX; ++j) acc[j] = 0.0f;
    if (r < m) {
        GLOBAL const uchar* row = w + (long)r * row_bytes;
        const int n_units = (k + UNIT - 1) / UNIT;
        for (int u = t; u < n_units; u += tpr) {
            float v[UNIT];
            decode_unit(row, u, k, v);
            const int len = unit_len(u, k);
            for (int j = 0; j < MV_NX; ++j) {
                if (j < nx) {
                    GLOBAL const float* xr = x + (long)(x0 + j) * k + UNIT * u;
                    /* four independent chains: a single one is bound by MAD latency */
                    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
                    for (int e = 0; e < UNIT; e += 4) {
                        s0 = MAD(v[e], X_AT(xr, e, len), s0);
                        s1 = MAD(v[e + 1], X_AT(xr, e + 1, len), s1);
                        s2 = MAD(v[e + 2], X_AT(xr, e + 2, len), s2);
                        s3 = MAD(v[e + 3], X_AT(xr, e + 3, len), s3);
                    }
                    acc[j] += (s0 + s1) + (s2 + s3);
                }
            }
        }
    }
    for (int j = 0; j < MV_NX; ++j) partial[j * MV_WG + lid] = acc[j];
    BARRIER();
    for (int stride = tpr >> 1; stride > 0; stride >>= 1) {
        if (t < stride)
            for (int j = 0; j < MV_NX; ++j)
                partial[j * MV_WG + lid] += partial[j * MV_WG + lid + stride];
        BARRIER();
    }
    if (t == 0 && r < m)
        for (int j = 0; j < nx; ++j) out[(long)(x0 + j) * m + r] = partial[j * MV_WG + lid];
}
