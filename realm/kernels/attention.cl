/* Causal attention with grouped KV heads, sliding window and soft-capping, flash-style:
 * scores are never materialized beyond one tile of ATT_WG keys. A running maximum and sum
 * (online softmax) rescale the accumulated output whenever a tile raises the maximum, so
 * memory does not grow with the context.
 *
 * One work-group of ATT_WG work-items per (query head, query row): work-item `lid` scores key
 * base + lid of the current tile, the tile's max and sum are reduced in local memory, and
 * then each work-item accumulates its own output dimensions (lid, lid + ATT_WG, ...) over the
 * tile's keys. The program is built with ATT_HD_MAX (a power of two >= head_dim) defined.
 * window <= 0 means no window, softcap <= 0 no soft-capping.
 */
#define ATT_WG 64
#define ATT_PER ((ATT_HD_MAX + ATT_WG - 1) / ATT_WG)

KERNEL void attention(BUF(const float, q), BUF(const float, kc), BUF(const float, vc),
                      BUF(float, out), const int n_head, const int n_kv_head, const int hd,
                      const int hd_v, const int n_past, const float scale, const int window,
                      const float softcap) {
    BIND(const float, q);
    BIND(const float, kc);
    BIND(const float, vc);
    BIND(float, out);
    LOCAL float qs[ATT_HD_MAX];
    LOCAL float p[ATT_WG];
    LOCAL float red[ATT_WG];
    const int h = GROUP(0), i = GROUP(1), lid = LID(0);
    const int kvh = h / (n_head / n_kv_head);
    const int qpos = n_past + i;
    const int first = window > 0 ? max(0, qpos - window + 1) : 0;

    GLOBAL const float* qr = q + ((long)i * n_head + h) * hd;
    for (int d = lid; d < hd; d += ATT_WG) qs[d] = qr[d];
    float acc[ATT_PER];
    for (int c = 0; c < ATT_PER; ++c) acc[c] = 0.0f;
    float m_run = -INFINITY, l_run = 0.0f;
    BARRIER();

    for (int base = first; base <= qpos; base += ATT_WG) {
        const int key = base + lid;
        float s = -INFINITY;
        if (key <= qpos) {
            GLOBAL const float* kr = kc + ((long)key * n_kv_head + kvh) * hd;
            float dot = 0.0f;
            for (int d = 0; d < hd; ++d) dot = MAD(qs[d], kr[d], dot);
            s = dot * scale;
            if (softcap > 0.0f) s = softcap * tanh(s / softcap);
        }
        red[lid] = s;
        BARRIER();
        for (int stride = ATT_WG / 2; stride > 0; stride >>= 1) {
            if (lid < stride) red[lid] = fmax(red[lid], red[lid + stride]);
            BARRIER();
        }
        const float m_new = fmax(m_run, red[0]); /* finite: key `base` is always visible */
        const float pj = key <= qpos ? exp(s - m_new) : 0.0f;
        BARRIER();
        p[lid] = pj;
        red[lid] = pj;
        BARRIER();
        for (int stride = ATT_WG / 2; stride > 0; stride >>= 1) {
            if (lid < stride) red[lid] += red[lid + stride];
            BARRIER();
        }
        const float correction = exp(m_run - m_new); /* 0 on the first tile */
        l_run = l_run * correction + red[0];
        const int n_keys = min(ATT_WG, qpos - base + 1);
        for (int c = 0; c < ATT_PER; ++c) {
            const int d = lid + ATT_WG * c;
            if (d < hd_v) {
                GLOBAL const float* vr = vc + ((long)base * n_kv_head + kvh) * hd_v + d;
                const long v_stride = (long)n_kv_head * hd_v;
                float a = acc[c] * correction;
                for (int j = 0; j < n_keys; ++j) a = MAD(p[j], vr[j * v_stride], a);
                acc[c] = a;
            }
        }
        m_run = m_new;
        BARRIER(); /* the next tile rewrites p and red */
    }

    GLOBAL float* o = out + ((long)i * n_head + h) * hd_v;
    for (int c = 0; c < ATT_PER; ++c) {
        const int d = lid + ATT_WG * c;
        if (d < hd_v) o[d] = acc[c] / l_run;
    }
}
