/* Row-wise ops: RMS norm and rotary position embedding, which may run in place (out == x):
 * every work-item reads the elements it writes before writing them; the paged KV write; and
 * the logits' checks (count_nonfinite, argmax_rows). */

#define NORM_WG 64

/* out = x / sqrt(mean(x^2) + eps) * weight over rows of d; one work-group per row. */
KERNEL void rms_norm(BUF(const float, x), BUF(const float, weight), BUF(float, out), const int d,
                     const float eps) {
    BIND(const float, x);
    BIND(const float, weight);
    BIND(float, out);
    LOCAL float red[NORM_WG];
    const int lid = LID(0);
    GLOBAL const float* xr = x + (long)GROUP(0) * d;
    GLOBAL float* o = out + (long)GROUP(0) * d;
    float s = 0.0f;
    for (int e = lid; e < d; e += NORM_WG) s = MAD(xr[e], xr[e], s);
    red[lid] = s;
    BARRIER();
    for (int stride = NORM_WG / 2; stride > 0; stride >>= 1) {
        if (lid < stride) red[lid] += red[lid + stride];
        BARRIER();
    }
    const float inv_rms = 1.0f / sqrt(red[0] / (float)d + eps);
    for (int e = lid; e < d; e += NORM_WG) o[e] = (xr[e] * inv_rms) * weight[e];
}

/* Rotate the first n_rot dims of each head: pair i turns by pos * (freq_scale * inv_freq[i] /
 * freq_factors[i]). inv_freq[i] = base^(-2i/n_rot) comes from the host, computed exactly as the
 * reference does. NEOX pairs (i, i + n_rot/2), NORMAL pairs (2i, 2i + 1). Global size
 * (n_rot/2 + tail, heads, tokens): work-items past n_rot/2 copy dims past n_rot when out != x
 * (tail = head_dim - n_rot; 0 in place). */
KERNEL void rope(BUF(const float, x), BUF(const int, pos), BUF(const float, inv_freq),
                 BUF(const float, freq_factors), BUF(float, out), const int n_head,
                 const int head_dim, const int n_rot, const int neox, const int has_factors,
                 const float freq_scale) {
    BIND(const float, x);
    BIND(const int, pos);
    BIND(const float, inv_freq);
    BIND(const float, freq_factors);
    BIND(float, out);
    const int i = GID(0), h = GID(1), tok = GID(2);
    const int n_pairs = n_rot / 2;
    const long row = ((long)tok * n_head + h) * head_dim;
    if (i < n_pairs) {
        float f = inv_freq[i];
        if (has_factors) f = f / freq_factors[i];
        const float theta = (float)pos[tok] * (freq_scale * f);
        const float c = cos(theta), s = sin(theta);
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + n_pairs : 2 * i + 1;
        const float a = x[row + i0], b = x[row + i1];
        out[row + i0] = a * c - b * s;
        out[row + i1] = a * s + b * c;
    } else {
        const int e = n_rot + (i - n_pairs);
        if (e < head_dim) out[row + e] = x[row + e];
    }
}

/* dst[rows[i]] = src[i] (the paged KV write) for rows of `width` 32-bit words, float32 or
 * int32 alike. Global size (width rounded up, n). The host has checked that the row ids are in
 * range and distinct, so no two work-items write one element. */
KERNEL void set_rows(BUF(const uint, src), BUF(const int, rows), BUF(uint, dst), const int width) {
    BIND(const uint, src);
    BIND(const int, rows);
    BIND(uint, dst);
    const int e = GID(0), i = GID(1);
    if (e < width) dst[(long)rows[i] * width + e] = src[(long)i * width + e];
}

/* out[r] = how many values of row r are NaN or infinite (exponent bits all set); one
 * work-group per row. */
KERNEL void count_nonfinite(BUF(const uint, x), BUF(int, out), const int d) {
    BIND(const uint, x);
    BIND(int, out);
    LOCAL int red[NORM_WG];
    const int lid = LID(0);
    GLOBAL const uint* xr = x + (long)GROUP(0) * d;
    int n = 0;
    for (int e = lid; e < d; e += NORM_WG) n += (xr[e] & 0x7F800000u) == 0x7F800000u;
    red[lid] = n;
    BARRIER();
    for (int stride = NORM_WG / 2; stride > 0; stride >>= 1) {
        if (lid < stride) red[lid] += red[lid + stride];
        BARRIER();
    }
    if (lid == 0) out[GROUP(0)] = red[0];
}

/* out[r] = numpy's argmax of row r: the first NaN if the row has one, else the first
 * maximum; one work-group per row. Values compare as int keys: the magnitude bits, negated
 * for a negative sign, which order as the floats do (-0.0 and +0.0 both 0). */
KERNEL void argmax_rows(BUF(const uint, x), BUF(int, out), const int d) {
    BIND(const uint, x);
    BIND(int, out);
    LOCAL int best_key[NORM_WG];
    LOCAL int best_at[NORM_WG];
    LOCAL int nan_at[NORM_WG];
    const int lid = LID(0);
    GLOBAL const uint* xr = x + (long)GROUP(0) * d;
    int key = 0, at = d, nan = d; /* at == d: nothing seen yet */
    for (int e = lid; e < d; e += NORM_WG) {
        const uint bits = xr[e];
        const uint magnitude = bits & 0x7FFFFFFFu;
        if (magnitude > 0x7F800000u) {
            nan = min(nan, e);
            continue;
        }
        const int k = (bits >> 31) ? -(int)magnitude : (int)magnitude;
        if (at == d || k > key) { /* each work-item's indices rise: the first of its maxima */
            key = k;
            at = e;
        }
    }
    best_key[lid] = key;
    best_at[lid] = at;
    nan_at[lid] = nan;
    BARRIER();
    for (int stride = NORM_WG / 2; stride > 0; stride >>= 1) {
        if (lid < stride) {
            const int k = best_key[lid + stride], a = best_at[lid + stride];
            if (a < d && (best_at[lid] == d || k > best_key[lid] || (k == best_key[lid] && a < best_at[lid]))) {
                best_key[lid] = k;
                best_at[lid] = a;
            }
            nan_at[lid] = min(nan_at[lid], nan_at[lid + stride]);
        }
        BARRIER();
    }
    if (lid == 0) out[GROUP(0)] = nan_at[0] < d ? nan_at[0] : best_at[0];
}
