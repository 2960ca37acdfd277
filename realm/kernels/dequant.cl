/* Dequantize and get_rows: one work-item per 32-element unit, global size (units, rows).
 * Output is bit-identical to the numpy reference: decoders are exact and nothing else is
 * computed here. */

KERNEL void dequantize(BUF(const uchar, w), const long row_bytes, const int k, const int n_units,
                       BUF(float, out)) {
    BIND(const uchar, w);
    BIND(float, out);
    const int u = GID(0), r = GID(1);
    if (u >= n_units) return;
    float v[UNIT];
    decode_unit(w + (long)r * row_bytes, u, k, v);
    GLOBAL float* o = out + (long)r * k + UNIT * u;
    const int len = unit_len(u, k);
    for (int t = 0; t < len; ++t) o[t] = v[t];
}

/* out[i] = w[ids[i]]; ids were range-checked by the host. */
KERNEL void get_rows(BUF(const uchar, w), const long row_bytes, const int k, const int n_units,
                     BUF(const int, ids), BUF(float, out)) {
    BIND(const uchar, w);
    BIND(const int, ids);
    BIND(float, out);
    const int u = GID(0), i = GID(1);
    if (u >= n_units) return;
    float v[UNIT];
    decode_unit(w + (long)ids[i] * row_bytes, u, k, v);
    GLOBAL float* o = out + (long)i * k + UNIT * u;
    const int len = unit_len(u, k);
    for (int t = 0; t < len; ++t) o[t] = v[t];
}
