/* Element-wise ops over flat arrays of n elements, one work-item per element; any of them
 * may run in place. Operation order follows the numpy reference (add and scale are one IEEE
 * operation, so they match it bit for bit). */

/* ggml's constants for the tanh approximation of GELU */
#define GELU_COEF_A 0.044715f
#define SQRT_2_OVER_PI 0.79788456080286535587989211986876f

KERNEL void swiglu(BUF(const float, gate), BUF(const float, up), BUF(float, out), const int n) {
    BIND(const float, gate);
    BIND(const float, up);
    BIND(float, out);
    const int i = GID(0);
    if (i >= n) return;
    const float g = gate[i];
    out[i] = g / (1.0f + exp(-g)) * up[i];
}

KERNEL void geglu(BUF(const float, gate), BUF(const float, up), BUF(float, out), const int n) {
    BIND(const float, gate);
    BIND(const float, up);
    BIND(float, out);
    const int i = GID(0);
    if (i >= n) return;
    const float g = gate[i];
    const float inner = SQRT_2_OVER_PI * g * (1.0f + GELU_COEF_A * g * g);
    out[i] = 0.5f * g * (1.0f + tanh(inner)) * up[i];
}

/* out = a + b; b has n elements, or b_len (one row) broadcast over a's rows. */
KERNEL void add(BUF(const float, a), BUF(const float, b), BUF(float, out), const int n,
                const int b_len) {
    BIND(const float, a);
    BIND(const float, b);
    BIND(float, out);
    const int i = GID(0);
    if (i >= n) return;
    out[i] = a[i] + b[b_len == n ? i : i % b_len];
}

KERNEL void scale(BUF(const float, x), BUF(float, out), const int n, const float s) {
    BIND(const float, x);
    BIND(float, out);
    const int i = GID(0);
    if (i >= n) return;
    out[i] = x[i] * s;
}
