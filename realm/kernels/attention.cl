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
 *
 * Two kernels share that math (att_head): `attention` reads a dense cache (key position p is
 * row p), `attention_paged` reads a block pool through a sequence's block table (position p
 * is row table[p / block_size] * block_size + p % block_size). Every reduction is inside one
 * work-group of one (head, query) and its split depends only on ATT_WG and the query's own
 * key range, so a query's output bits do not depend on the other queries of the launch.
 */
#define ATT_WG 64
#define ATT_PER ((ATT_HD_MAX + ATT_WG - 1) / ATT_WG)

/* The pool row of key position `key`: through `table` when block_size > 0, else `key`. */
INLINE int att_slot(GLOBAL const int* table, const int block_size, const int key) {
    return block_size > 0 ? table[key / block_size] * block_size + key % block_size : key;
}

/* One (query head, query) pair: o[0..hd_v) = softmax(qr . keys * scale) @ values over key
 * positions first..qpos of kvh's rows. Called by all ATT_WG work-items of a work-group (it
 * has barriers); qs, p, red and slots are the work-group's local scratch. */
INLINE void att_head(GLOBAL const float* qr, GLOBAL const float* kc, GLOBAL const float* vc,
                     GLOBAL float* o, GLOBAL const int* table, const int block_size,
                     const int n_kv_head, const int kvh, const int hd, const int hd_v,
                     const int qpos, const float scale, const int window, const float softcap,
                     LOCAL_PTR float* qs, LOCAL_PTR float* p, LOCAL_PTR float* red,
                     LOCAL_PTR int* slots) {
    const int lid = LID(0);
    const int first = window > 0 ? max(0, qpos - window + 1) : 0;
    const long v_stride = (long)n_kv_head * hd_v;

    for (int d = lid; d < hd; d += ATT_WG) qs[d] = qr[d];
    float acc[ATT_PER];
    for (int c = 0; c < ATT_PER; ++c) acc[c] = 0.0f;
    float m_run = -INFINITY, l_run = 0.0f;
    BARRIER();

    for (int base = first; base <= qpos; base += ATT_WG) {
        const int key = base + lid;
        float s = -INFINITY;
        if (key <= qpos) {
            const int slot = att_slot(table, block_size, key);
            slots[lid] = slot;
            GLOBAL const float* kr = kc + ((long)slot * n_kv_head + kvh) * hd;
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
                GLOBAL const float* vr = vc + (long)kvh * hd_v + d;
                float a = acc[c] * correction;
                for (int j = 0; j < n_keys; ++j) a = MAD(p[j], vr[slots[j] * v_stride], a);
                acc[c] = a;
            }
        }
        m_run = m_new;
        BARRIER(); /* the next tile rewrites p, red and slots */
    }

    for (int c = 0; c < ATT_PER; ++c) {
        const int d = lid + ATT_WG * c;
        if (d < hd_v) o[d] = acc[c] / l_run;
    }
}

/* Dense cache: query row i is at position n_past + i and reads cache rows 0..n_past + i. */
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
    LOCAL int slots[ATT_WG];
    const int h = GROUP(0), i = GROUP(1);
    const long row = (long)i * n_head + h;
    att_head(q + row * hd, kc, vc, out + row * hd_v, (GLOBAL const int*)0, 0, n_kv_head,
             h / (n_head / n_kv_head), hd, hd_v, n_past + i, scale, window, softcap, qs, p, red,
             slots);
}

/* Paged pool: token i is at position positions[i] of sequence seq_ids[i], whose block ids are
 * row seq_ids[i] of block_table [n_seqs, max_blocks]. The host has checked every index. */
KERNEL void attention_paged(BUF(const float, q), BUF(const float, kp), BUF(const float, vp),
                            BUF(const int, block_table), BUF(const int, seq_ids),
                            BUF(const int, positions), BUF(float, out), const int n_head,
                            const int n_kv_head, const int hd, const int hd_v,
                            const int block_size, const int max_blocks, const float scale,
                            const int window, const float softcap) {
    BIND(const float, q);
    BIND(const float, kp);
    BIND(const float, vp);
    BIND(const int, block_table);
    BIND(const int, seq_ids);
    BIND(const int, positions);
    BIND(float, out);
    LOCAL float qs[ATT_HD_MAX];
    LOCAL float p[ATT_WG];
    LOCAL float red[ATT_WG];
    LOCAL int slots[ATT_WG];
    const int h = GROUP(0), i = GROUP(1);
    const long row = (long)i * n_head + h;
    att_head(q + row * hd, kp, vp, out + row * hd_v,
             block_table + (long)seq_ids[i] * max_blocks, block_size, n_kv_head,
             h / (n_head / n_kv_head), hd, hd_v, positions[i], scale, window, softcap, qs, p, red,
             slots);
}
