/*
 * adapt_ops.c -- the adaptive models' passes over the whole vocabulary (codec/adapt.py):
 * the temperature, its expectation and the adaptive bias's step, once per coded step on
 * both sides. adapt.py's numpy code computes the same int64 integers (it is the
 * portable path and the spec: tests compare the two); here each is one pass over the
 * rows instead of five, which mattered for Gemma's 262,144 tokens (the numpy passes took
 * most of level 8's compress time).
 *
 * Integers only: int64 sums of int32 products, exact (their bounds are in the comments),
 * so the order of the additions changes nothing. Right shifts of negative values are
 * arithmetic (floor), as numpy's; gcc documents them so.
 */
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

/* For each row r of the logits l (M, V) and the tables f (M, V): top[r] = max_v l[r][v]
   and el[r] = sum_v (f[r][v] - sub) (l[r][v] - top[r]). A table's entries sum to 2^P
   <= 2^30 and |l - top| < 2^31, so |el| < 2^61. Returns 0, or -1 for bad sizes. */
EXPORT int llmzip_ad_centred(int64_t M, int64_t V, const int32_t *l, const int32_t *f,
                             int64_t sub, int64_t *top, int64_t *el)
{
    if (M < 0 || V < 1) return -1;
    for (int64_t r = 0; r < M; r++) {
        const int32_t *lr = l + r * V, *fr = f + r * V;
        int32_t m = lr[0];
        for (int64_t v = 1; v < V; v++)
            if (lr[v] > m) m = lr[v];
        int64_t s = 0;
        for (int64_t v = 0; v < V; v++)
            s += ((int64_t)fr[v] - sub) * ((int64_t)lr[v] - m);
        top[r] = m;
        el[r] = s;
    }
    return 0;
}

/* The adaptive bias's step (adapt.py, Adapter.update): every coded token y of the step
   (n of them, repeats counted) adds step 2^P to b[y]; every entry loses step times the
   sum of its column of the step's tables f (M, V); then b is clamped to +-clamp and
   b32 = b >> frac (floor), the bias the next tables add. Bounds: |b| <= 2^46 (the clamp),
   step 2^P < 2^40 per token, step sum_r f < 2^40 per row: no overflow for M, n < 2^16.
   Returns 0, or -1 for a token outside 0..V-1 or bad sizes (b is then unchanged). */
EXPORT int llmzip_ad_bias(int64_t M, int64_t V, const int32_t *f, const int64_t *sym,
                          int64_t n, int64_t P, int64_t step, int64_t clamp, int64_t frac,
                          int64_t *b, int32_t *b32)
{
    if (M < 0 || V < 1 || n < 0 || P < 0 || P > 30 || frac < 0 || frac > 62) return -1;
    for (int64_t i = 0; i < n; i++)
        if (sym[i] < 0 || sym[i] >= V) return -1;
    for (int64_t i = 0; i < n; i++)
        b[sym[i]] += step << P;
    for (int64_t v = 0; v < V; v++) {
        int64_t g = 0;
        for (int64_t r = 0; r < M; r++)
            g += f[r * V + v];
        int64_t x = b[v] - step * g;
        x = x > clamp ? clamp : x < -clamp ? -clamp : x;
        b[v] = x;
        b32[v] = (int32_t)(x >> frac);
    }
    return 0;
}

/* The temperature (adapt.py, Adapter.tables): out[i] = clamp((l[i] tau) >> 16, +-2^30)
   over n logits, tau in Q16 (1/4 .. 4: 2^14 .. 2^18). |l| <= 2^31 and tau < 2^19, so
   the product is below 2^50. Returns 0, or -1 for bad sizes or tau. */
EXPORT int llmzip_ad_temper(int64_t n, const int32_t *l, int64_t tau, int32_t *out)
{
    if (n < 0 || tau < 0 || tau >= (1 << 19)) return -1;
    const int64_t hi = (int64_t)1 << 30;
    for (int64_t i = 0; i < n; i++) {
        int64_t x = ((int64_t)l[i] * tau) >> 16;
        out[i] = (int32_t)(x > hi ? hi : x < -hi ? -hi : x);
    }
    return 0;
}
