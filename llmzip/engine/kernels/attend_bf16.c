/* One decoding step of grouped-query attention over a bfloat16 KV cache.
 *
 * llmzip's engine (llmzip/engine.py) calls this once per layer per step through ctypes
 * (llmzip/kernels/__init__.py compiles it on first use). It exists because the step is
 * bound by reading the KV cache: torch's float32 bmm reads 4 bytes per cached value, this
 * reads 2, and its arithmetic is fixed by the source, not by a library's kernel choice.
 *
 * Determinism (the invariant: encoder and decoder compute bit-identical numbers):
 *   - every (segment, kv head) pair is computed start to end by one thread, in a fixed
 *     order, so the result does not depend on the number of threads;
 *   - every reduction runs over 16 explicit lanes combined by a fixed tree, and the file
 *     is compiled with -ffp-contract=off and without -ffast-math, so whether the compiler
 *     vectorises with SSE, AVX2 or AVX-512 the same IEEE operations happen in the same
 *     order;
 *   - exp is computed here (a Cephes-style polynomial), not taken from the C library,
 *     whose expf differs between libc versions.
 *
 * Shapes: B segments, K kv heads, G query heads per kv head, D head size (a multiple of
 * 16), T_max cache length (a multiple of 16); positions S0..S-1 are attended (a
 * sliding window starts past 0).
 *   q   (B, K, G, D) float32              queries of this step (RoPE applied)
 *   kc  (B, K, T_max/16, D, 16) bf16      key cache, tiled: [.., s/16, d, s%16] = k[s][d]
 *                                         (raw uint16 bit patterns)
 *   vc  (B, K, T_max, D) bf16             value cache
 *   out (B, K, G, D) float32              softmax(q k^T * scale) v
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16
#define MAX_G 16
#define MAX_D 256

/* 16 floats / 16 uint32 / 16 int32 / 16 uint16 as GCC vector types: element-wise IEEE
 * operations, lowered to AVX-512, AVX2 or SSE as the CPU allows, same results on all. */
typedef float vf __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));

static inline vf splat(float x) { return (vf){0} + x; }

/* 16 bf16 values (any alignment) -> 16 floats, exactly */
static inline vf load_bf16(const uint16_t *p) {
    vh h;
    memcpy(&h, p, sizeof h);
    vu u = __builtin_convertvector(h, vu) << 16;
    return (vf)u;
}

/* exp(x) for x <= 0, 16 at a time (softmax arguments after subtracting the maximum).
 * Cephes expf: x = n ln2 + r with n = round(x / ln2) (the 1.5 * 2^23 trick rounds to
 * nearest), exp(r) by a degree-6 polynomial, times 2^n built from its bits. Relative
 * error ~1e-7; arguments below -87 give 0. */
static inline vf exp_nonpos(vf x) {
    vi under = x < splat(-87.0f);                     /* -1 where x < -87, else 0 */
    x = (vf)(((vi)x & ~under) | ((vi)splat(-87.0f) & under));
    vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    vf y = p * (vf)e;
    return (vf)((vi)y & ~under);
}

/* Sum of 16 lanes by a fixed tree: ((l0+l8)+(l4+l12))+... - the same on every build. */
static inline float lanes_sum(vf v) {
    float a[LANES];
    memcpy(a, &v, sizeof a);
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++)
            a[i] = a[i] + a[i + w];
    return a[0];
}

/* always inlined, so the calls in attend_pair_any with constant G and D get loops the
 * compiler unrolls and accumulators it keeps in registers */
static inline __attribute__((always_inline)) void attend_pair(
        const float *q, const uint16_t *kc, const uint16_t *vc, float *out, float *scores,
        int G, int D, int S0, int S, float scale) {
    vf acc[MAX_G], y[MAX_G][MAX_D / LANES];
    /* scores[g * S + s] = (q_g . k_s) * scale, 16 positions at a time: the key cache is
     * tiled as (T_max / 16, D, 16), so lane l of tile row d is k[s0 + l][d] and each
     * score is a plain sum over d in order. */
    int t0 = S0 / LANES, tiles = (S + LANES - 1) / LANES;
    for (int t = t0; t < tiles; t++) {
        const uint16_t *kt = kc + (size_t)t * D * LANES;
        for (int g = 0; g < G; g++) acc[g] = splat(0.0f);
        for (int d = 0; d < D; d++) {
            vf k = load_bf16(kt + (size_t)d * LANES);
            for (int g = 0; g < G; g++) acc[g] = acc[g] + q[(size_t)g * D + d] * k;
        }
        for (int g = 0; g < G; g++) {
            acc[g] = acc[g] * scale;
            if (t == t0)                     /* positions before S0 are not attended */
                for (int l = 0; l < S0 - t0 * LANES; l++) acc[g][l] = -INFINITY;
            memcpy(scores + (size_t)g * S + (size_t)t * LANES, &acc[g],
                   sizeof(float) * (size_t)(S - t * LANES < LANES ? S - t * LANES : LANES));
        }
    }
    /* softmax weights, unnormalised: e = exp(score - max); the sum runs over 16 lanes by
     * s mod 16 (positions outside S0..S-1 in the first and last tiles count 0) */
    float inv[MAX_G];
    for (int g = 0; g < G; g++) {
        float *sc = scores + (size_t)g * S;
        float m = -INFINITY;
        for (int s = S0; s < S; s++) m = sc[s] > m ? sc[s] : m;
        vf sum = splat(0.0f);
        for (int s = t0 * LANES; s < S; s += LANES) {
            int n = S - s < LANES ? S - s : LANES;
            vf x = splat(-INFINITY);
            memcpy(&x, sc + s, sizeof(float) * (size_t)n);
            vf e = exp_nonpos(x - m);
            memcpy(sc + s, &e, sizeof(float) * (size_t)n);
            sum = sum + e;
        }
        inv[g] = 1.0f / lanes_sum(sum);
    }
    /* out_g = (sum_s e_gs v_s) / sum_s e_gs, accumulated over s in order */
    int dv = D / LANES;
    for (int g = 0; g < G; g++)
        for (int j = 0; j < dv; j++) y[g][j] = splat(0.0f);
    for (int s = S0; s < S; s++) {
        const uint16_t *v = vc + (size_t)s * D;
        for (int j = 0; j < dv; j++) {
            vf vr = load_bf16(v + j * LANES);
            for (int g = 0; g < G; g++) y[g][j] = y[g][j] + scores[(size_t)g * S + s] * vr;
        }
    }
    for (int g = 0; g < G; g++)
        for (int j = 0; j < dv; j++) {
            vf o = y[g][j] * inv[g];
            memcpy(out + (size_t)g * D + j * LANES, &o, sizeof o);
        }
}

static void attend_pair_any(const float *q, const uint16_t *kc, const uint16_t *vc,
                            float *out, float *scores, int G, int D, int S0, int S,
                            float scale) {
#define CASE(g, d) if (G == g && D == d) { \
        attend_pair(q, kc, vc, out, scores, g, d, S0, S, scale); return; }
    CASE(1, 64) CASE(2, 64) CASE(3, 64) CASE(4, 64) CASE(5, 64) CASE(6, 64) CASE(8, 64)
    CASE(1, 128) CASE(2, 128) CASE(3, 128) CASE(4, 128) CASE(8, 128)
    CASE(1, 256) CASE(2, 256) CASE(4, 256) CASE(8, 256)
#undef CASE
    attend_pair(q, kc, vc, out, scores, G, D, S0, S, scale);
}

/* Returns 0 on success, 1 on bad shapes, 2 when out of memory. */
int llmzip_attend_bf16(const float *q, const uint16_t *kc, const uint16_t *vc, float *out,
                       int B, int K, int G, int D, int T_max, int S0, int S,
                       float scale, int threads) {
    if (B < 0 || K <= 0 || G <= 0 || G > MAX_G || D <= 0 || D > MAX_D || D % LANES
        || T_max % LANES || S0 < 0 || S0 >= S || S > T_max || threads <= 0)
        return 1;
    int pairs = B * K, failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *scores = malloc(sizeof(float) * (size_t)G * S);
        if (!scores) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int p = 0; p < pairs; p++) {
            if (!scores) continue;
            attend_pair_any(q + (size_t)p * G * D, kc + (size_t)p * T_max * D,
                        vc + (size_t)p * T_max * D, out + (size_t)p * G * D,
                        scores, G, D, S0, S, scale);
        }
        free(scores);
    }
    return failed ? 2 : 0;
}
