/* The exact engine's elementwise, normalisation, attention and output kernels.
 *
 * Every function here computes exactly what llmzip/engine/exact/reference.py computes
 * (docs/engine.md is the spec): integer arithmetic only (int64, plus float64 used as an
 * exact integer accumulator where every value and partial sum is an integer below 2^53),
 * so the result does not depend on the compiler, the SIMD width, the thread count or how
 * rows are batched. Rows are independent; threads split rows (or (row, head) pairs).
 *
 * Conventions: rsr(v, s) = floor((v + 2^(s-1)) / 2^s) for s > 0, v * 2^-s for s <= 0;
 * ">>" on negative int64 is an arithmetic shift (every compiler this builds with), and
 * the library is built with -fwrapv: int64 arithmetic wraps like torch's (the spec's
 * bounds keep a working model far from it; the rule only makes every result defined).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#define PRAGMA_(x) _Pragma(#x)
#define PARALLEL_FOR(n) PRAGMA_(omp parallel for schedule(dynamic, 1) num_threads(n))
#define PARALLEL_FOR_BAD(n) PRAGMA_(omp parallel for schedule(dynamic, 1) num_threads(n) reduction(|:bad))
#else
#define PARALLEL_FOR(n)
#define PARALLEL_FOR_BAD(n)
#endif

#define EXPORT __attribute__((visibility("default")))
#define ATT_CLAMP (((int64_t)1 << 24) - 1)   /* q, k, v bound for attention (Q12) */

static inline int64_t rsr(int64_t v, int s) {
    if (s <= 0) return v * ((int64_t)1 << -s);
    return (v + ((int64_t)1 << (s - 1))) >> s;
}

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static inline int64_t round_div(int64_t a, int64_t b) { return floor_div(2 * a + b, 2 * b); }

static inline int bit_length(uint64_t m) { return m ? 64 - __builtin_clzll(m) : 0; }

static inline int64_t isqrt64(int64_t n) {         /* floor(sqrt(n)), 0 <= n <= 2^62 */
    int64_t r = (int64_t)sqrt((double)n);           /* a guess within 1 ... */
    if (r * r > n) r--;                             /* ... corrected exactly */
    if ((r + 1) * (r + 1) <= n) r++;
    return r;
}

static inline int64_t iabs64(int64_t v) { return v < 0 ? -v : v; }

/* smallest e >= 0 with rsr(m, e) <= levels */
static inline int pow2_exponent(int64_t m, int64_t levels) {
    int e = bit_length((uint64_t)m) - bit_length((uint64_t)levels);
    if (e < 0) e = 0;
    while (rsr(m, e) > levels) e++;
    return e;
}

/* 2^30 * 2^(-d/1024) for d >= 0 */
static inline int64_t exp2_neg(const int64_t *t, int64_t d) {
    int64_t sh = d >> 10;
    return sh >= 63 ? 0 : t[d & 1023] >> sh;
}

/* ---- token embedding: x = rsr(w[tok] * mult[tok], shift), int64 --------------- */
EXPORT int llmzip_ex_embed(int M, int C, const int8_t *w, const int64_t *mult, int shift,
                           const int64_t *tok, int64_t *x, int threads) {
    (void)threads;
    for (int i = 0; i < M; i++) {
        const int8_t *r = w + tok[i] * (int64_t)C;
        for (int c = 0; c < C; c++) x[(int64_t)i * C + c] = rsr((int64_t)r[c] * mult[tok[i]], shift);
    }
    return 0;
}

/* ---- quantise rows to a power-of-two step (the input of every matmul) ------------- */
static void quant_row(const int64_t *y, int K, int64_t levels, int16_t *a, int32_t *e) {
    int64_t m = 0;
    for (int k = 0; k < K; k++) { int64_t v = iabs64(y[k]); if (v > m) m = v; }
    int s = pow2_exponent(m, levels);
    for (int k = 0; k < K; k++) a[k] = (int16_t)rsr(y[k], s);
    *e = s;
}

EXPORT int llmzip_ex_quant(int M, int K, const int64_t *y, int64_t levels, int16_t *a, int32_t *e,
                    int threads) {
    PARALLEL_FOR(threads)
    for (int i = 0; i < M; i++) quant_row(y + (int64_t)i * K, K, levels, a + (int64_t)i * K, e + i);
    return 0;
}

/* ---- RMSNorm: x / rms(x) * gain, into Q(out_frac) ------------------------------- */
static void rmsnorm_row(const int64_t *x, int C, const int64_t *gain, int out_frac,
                        int64_t Q, int64_t *y) {
    int64_t m = 0;
    for (int k = 0; k < C; k++) { int64_t v = iabs64(x[k]); if (v > m) m = v; }
    int s = pow2_exponent(m, (1 << 20) - 1);
    int64_t ss = 0;
    for (int k = 0; k < C; k++) { int64_t v = rsr(x[k], s); ss += v * v; }
    int64_t r = isqrt64(ss << 10);
    if (r < 1) r = 1;
    for (int k = 0; k < C; k++) {
        int64_t t = floor_div(rsr(x[k], s) * Q, r);
        y[k] = rsr(t * gain[k], 32 - out_frac);
    }
}

/* x (M, C) int64 -> y (M, C) int64; Q = isqrt(C << 42) */
EXPORT int llmzip_ex_rmsnorm(int M, int C, const int64_t *x, const int64_t *gain, int out_frac,
                      int64_t Q, int64_t *y, int threads) {
    PARALLEL_FOR(threads)
    for (int i = 0; i < M; i++)
        rmsnorm_row(x + (int64_t)i * C, C, gain, out_frac, Q, y + (int64_t)i * C);
    return 0;
}

/* RMSNorm then quantise for the next matmul: x (M, C) -> a (M, C) int16, e (M) */
EXPORT int llmzip_ex_norm_quant(int M, int C, const int64_t *x, const int64_t *gain, int out_frac,
                         int64_t Q, int64_t levels, int16_t *a, int32_t *e, int threads) {
    int bad = 0;
    PARALLEL_FOR_BAD(threads)
    for (int i = 0; i < M; i++) {
        int64_t *tmp = malloc(sizeof(int64_t) * C);
        if (!tmp) { bad = 1; continue; }
        rmsnorm_row(x + (int64_t)i * C, C, gain, out_frac, Q, tmp);
        quant_row(tmp, C, levels, a + (int64_t)i * C, e + i);
        free(tmp);
    }
    return bad ? 2 : 0;
}

/* ---- requantise matmul outputs -------------------------------------------------- */
/* out[i][n] (+)= rsr(acc[i][n] * mult[n], shift - e[i]) */
EXPORT int llmzip_ex_requant(int M, int N, const int32_t *acc, const int64_t *mult, int shift,
                      const int32_t *e, int64_t *out, int add, int threads) {
    PARALLEL_FOR(threads)
    for (int i = 0; i < M; i++) {
        const int32_t *a = acc + (int64_t)i * N;
        int64_t *o = out + (int64_t)i * N;
        int s = shift - e[i];
        if (add) for (int n = 0; n < N; n++) o[n] += rsr((int64_t)a[n] * mult[n], s);
        else     for (int n = 0; n < N; n++) o[n] = rsr((int64_t)a[n] * mult[n], s);
    }
    return 0;
}

/* ---- gated MLP: act(gate) * up, then quantised for the down projection ----------- */
static inline int64_t lut_act(const int64_t *tab, int64_t x, int frac) {
    const int n = 16 << 6, step = frac - 6;
    int64_t i = x >> step, f = x & (((int64_t)1 << step) - 1);
    if (i >= n) return x;
    if (i < -n) return rsr(tab[0], 16 - frac);
    int64_t lo = tab[i + n], hi = tab[i + n + 1];
    return rsr(lo * ((int64_t)1 << step) + (hi - lo) * f, 10);
}

/* acc (M, 2F): gate | up; mult (2F); z = rsr(act(gate) * up, frac), all in Q(frac) */
EXPORT int llmzip_ex_glu(int M, int F, const int32_t *acc, const int64_t *mult, int shift,
                  const int32_t *e, const int64_t *tab, int frac, int64_t levels,
                  int16_t *a, int32_t *ea, int threads) {
    int bad = 0;
    PARALLEL_FOR_BAD(threads)
    for (int i = 0; i < M; i++) {
        int64_t *z = malloc(sizeof(int64_t) * F);
        if (!z) { bad = 1; continue; }
        const int32_t *r = acc + (int64_t)i * 2 * F;
        int s = shift - e[i];
        for (int n = 0; n < F; n++) {
            int64_t g = rsr((int64_t)r[n] * mult[n], s);
            int64_t u = rsr((int64_t)r[F + n] * mult[F + n], s);
            z[n] = rsr(lut_act(tab, g, frac) * u, frac);
        }
        quant_row(z, F, levels, a + (int64_t)i * F, ea + i);
        free(z);
    }
    return bad ? 2 : 0;
}

/* ---- RoPE and the KV cache ------------------------------------------------------ */
/* rotate x (D) in place: adjacent pairs (halves = 0) or halves (halves = 1) */
static inline void rope_vec(int64_t *x, int D, const int64_t *c, const int64_t *s, int halves) {
    int h = D / 2;
    for (int j = 0; j < h; j++) {
        int ia = halves ? j : 2 * j, ib = halves ? j + h : 2 * j + 1;
        int64_t a = x[ia], b = x[ib];
        x[ia] = rsr(a * c[j] - b * s[j], 15);
        x[ib] = rsr(a * s[j] + b * c[j], 15);
    }
}

static inline void quant_kv(const int64_t *x, int D, int8_t *q, int64_t *sigma) {
    int64_t m = 0;
    for (int d = 0; d < D; d++) { int64_t v = iabs64(x[d]); if (v > m) m = v; }
    int64_t den = m > 0 ? m : 1;
    for (int d = 0; d < D; d++) q[d] = (int8_t)round_div(127 * x[d], den);
    *sigma = m;
}

/* 2^e as a double, for -1022 <= e <= 1023 (exact) */
static inline double pow2d(int e) {
    union { uint64_t u; double d; } v;
    v.u = (uint64_t)(1023 + e) << 52;
    return v.d;
}

/* sigma_k * A (< 2^48) as km * 2^ke, km <= 2^22 (reference.key_multiplier) */
static inline void key_multiplier(int64_t sigma, int64_t A, int64_t *km, int64_t *ke) {
    int64_t P = sigma * A;
    int e = bit_length((uint64_t)P) - 22;
    if (e < 0) e = 0;
    *km = rsr(P, e);
    *ke = e;
}

/* The fast path's key cache is tiled: for each (segment, kv head), positions in tiles of
 * 16, each tile [D/2][16][2] int8 (pairs of dimensions of 16 positions side by side), so
 * that one vector multiply-add of pairs gives 16 positions' partial dot products. Keys'
 * score multipliers are stored as the doubles km * 2^(ke - SCORE_SHIFT) (exact) and the
 * values' scales vs as doubles (exact, < 2^24). */
#define KT 16
static inline int64_t ktile_index(int64_t slot_base, int s, int d, int D) {
    /* byte offset of key (position s, dimension d) within its (segment, kv head) block */
    return slot_base * D + (int64_t)(s / KT) * KT * D + (int64_t)(d / 2) * (2 * KT)
           + (s % KT) * 2 + (d % 2);
}

/* qkv (M, H + 2K, D) int64 in Q12 (after any per-head norm), row_b/row_pos per row:
 * q rotated and quantised per head (q16, eq); k rotated, quantised and written to the
 * tiled key cache kt with its multiplier ksd; v quantised into vc (B, K, Smax, D) with
 * its scale vsd. Smax is a multiple of 16. cos/sin (n_pos, D/2). A: the score constant,
 * zshift: reference.SCORE_SHIFT. */
EXPORT int llmzip_ex_qkv(int M, int H, int K, int D, int64_t *qkv, const int32_t *row_b,
                         const int32_t *row_pos, const int64_t *cos_t, const int64_t *sin_t,
                         int halves, int16_t *q16, int32_t *eq, int8_t *kt, double *ksd,
                         int8_t *vc, double *vsd, int Smax, int64_t A, int zshift,
                         int threads) {
    int bad = 0;
    PARALLEL_FOR_BAD(threads)
    for (int i = 0; i < M; i++) {
        int8_t *k8 = malloc(D);
        if (!k8) { bad = 1; continue; }
        int64_t *r = qkv + (int64_t)i * (H + 2 * K) * D;
        const int64_t *c = cos_t + (int64_t)row_pos[i] * (D / 2);
        const int64_t *s = sin_t + (int64_t)row_pos[i] * (D / 2);
        for (int h = 0; h < H + K; h++) rope_vec(r + (int64_t)h * D, D, c, s, halves);
        for (int64_t j = 0; j < (int64_t)(H + 2 * K) * D; j++)   /* attention's bound */
            r[j] = r[j] > ATT_CLAMP ? ATT_CLAMP : r[j] < -ATT_CLAMP ? -ATT_CLAMP : r[j];
        for (int h = 0; h < H; h++)
            quant_row(r + (int64_t)h * D, D, 32767, q16 + ((int64_t)i * H + h) * D, eq + (int64_t)i * H + h);
        for (int g = 0; g < K; g++) {
            int64_t base = ((int64_t)row_b[i] * K + g) * Smax, slot = base + row_pos[i];
            int64_t sigma, km, ke, vs;
            quant_kv(r + (int64_t)(H + g) * D, D, k8, &sigma);
            for (int d = 0; d < D; d++) kt[ktile_index(base, row_pos[i], d, D)] = k8[d];
            key_multiplier(sigma, A, &km, &ke);
            ksd[slot] = (double)km * pow2d((int)ke - zshift);
            quant_kv(r + (int64_t)(H + K + g) * D, D, vc + slot * D, &vs);
            vsd[slot] = (double)vs;
        }
        free(k8);
    }
    return bad ? 2 : 0;
}

/* per-head RMSNorm of q and k (Gemma), in place on qkv (M, H + 2K, D) */
EXPORT int llmzip_ex_qk_norm(int M, int H, int K, int D, int64_t *qkv, const int64_t *qg,
                      const int64_t *kg, int frac, int64_t Q, int threads) {
    int bad = 0;
    PARALLEL_FOR_BAD(threads)
    for (int i = 0; i < M; i++) {
        int64_t *tmp = malloc(sizeof(int64_t) * D);
        if (!tmp) { bad = 1; continue; }
        for (int h = 0; h < H + K; h++) {
            int64_t *v = qkv + ((int64_t)i * (H + 2 * K) + h) * D;
            rmsnorm_row(v, D, h < H ? qg : kg, frac, Q, tmp);
            memcpy(v, tmp, sizeof(int64_t) * D);
        }
        free(tmp);
    }
    return bad ? 2 : 0;
}

/* ---- SIMD levels of the hot loops ----------------------------------------------
 * The same C source compiled three times with the target attribute (GCC inlines the
 * body into each wrapper, so the compiler vectorises it for that instruction set);
 * all arithmetic is exact, so every level gives the same integers. level: 0 portable,
 * 1 AVX2 + FMA, 2 AVX-512 (F, BW, DQ, VL). */
#if defined(__x86_64__)
#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define HAVE_LEVELS 1
#else
#define T_AVX2
#define T_AVX512
#endif
#define INLINE static inline __attribute__((always_inline))

/* reference.probabilities: p = floor(e R / 2^(k + t)); returns R and the shift */
INLINE void prob_scale(int64_t E, int64_t total, int64_t *R, int *shift) {
    int t = bit_length((uint64_t)E) - 40;
    if (t < 0) t = 0;
    int64_t E1 = ((E - 1) >> t) + 1;
    int k = bit_length((uint64_t)E1) + 21 - bit_length((uint64_t)total);
    *R = (total << k) / E1;
    *shift = k + t;
}

/* ---- attention ------------------------------------------------------------------ */
/* One row (segment b, position p) and one kv head: its G query heads over the cached
 * positions lo..p (n of them). Dot products dot = q16 . k8 (int32, exact), from the key
 * tiles; scores z = floor(dot * ksd * 2^eq) = floor(dot km 2^(ke + eq - 44)) in Q10 bits
 * (dot * km < 2^53: every float64 product here is exact); weights through the 2^-x
 * table, normalised by prob_scale to Q16 p; output floor(sum p vs v / (127 * 2^16)) (every
 * product and partial sum below 2^47: float64 accumulation in any order is exact).
 * dot: G * (n + 32) int32 scratch, z: G * n doubles, acc: G * D doubles. */
#define MAXG 8

/* dots of G heads with the positions of tiles t0..t1-1: dot[h][(t - t0) * 16 + lane] */
INLINE void dots_portable(int G, int D, const int16_t *q, const int8_t *kt, int t0, int t1,
                          int32_t *dot, int stride) {
    for (int t = t0; t < t1; t++) {
        const int8_t *tile = kt + (int64_t)t * KT * D;
        for (int h = 0; h < G; h++) {
            int32_t acc[KT] = {0};
            const int16_t *qh = q + (int64_t)h * D;
            for (int dp = 0; dp < D / 2; dp++)
                for (int l = 0; l < KT; l++)
                    acc[l] += (int32_t)qh[2 * dp] * tile[dp * 2 * KT + 2 * l]
                              + (int32_t)qh[2 * dp + 1] * tile[dp * 2 * KT + 2 * l + 1];
            memcpy(dot + (int64_t)h * stride + (int64_t)(t - t0) * KT, acc, sizeof(acc));
        }
    }
}

#ifdef HAVE_LEVELS
#include <immintrin.h>
T_AVX512 static void dots_avx512(int G, int D, const int16_t *q, const int8_t *kt, int t0,
                                 int t1, int32_t *dot, int stride) {
    for (int t = t0; t < t1; t++) {
        const int8_t *tile = kt + (int64_t)t * KT * D;
        __m512i acc[MAXG];
        for (int h = 0; h < G; h++) acc[h] = _mm512_setzero_si512();
        for (int dp = 0; dp < D / 2; dp++) {
            __m512i k = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(tile + dp * 2 * KT)));
            for (int h = 0; h < G; h++) {
                int32_t pair;
                memcpy(&pair, q + (int64_t)h * D + 2 * dp, 4);
                acc[h] = _mm512_add_epi32(acc[h], _mm512_madd_epi16(k, _mm512_set1_epi32(pair)));
            }
        }
        for (int h = 0; h < G; h++)
            _mm512_storeu_si512(dot + (int64_t)h * stride + (int64_t)(t - t0) * KT, acc[h]);
    }
}

T_AVX2 static void dots_avx2(int G, int D, const int16_t *q, const int8_t *kt, int t0,
                             int t1, int32_t *dot, int stride) {
    for (int t = t0; t < t1; t++) {
        const int8_t *tile = kt + (int64_t)t * KT * D;
        __m256i lo[MAXG], hi[MAXG];
        for (int h = 0; h < G; h++) lo[h] = hi[h] = _mm256_setzero_si256();
        for (int dp = 0; dp < D / 2; dp++) {
            const int8_t *src = tile + dp * 2 * KT;
            __m256i k0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)src));
            __m256i k1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + 16)));
            for (int h = 0; h < G; h++) {
                int32_t pair;
                memcpy(&pair, q + (int64_t)h * D + 2 * dp, 4);
                __m256i b = _mm256_set1_epi32(pair);
                lo[h] = _mm256_add_epi32(lo[h], _mm256_madd_epi16(k0, b));
                hi[h] = _mm256_add_epi32(hi[h], _mm256_madd_epi16(k1, b));
            }
        }
        for (int h = 0; h < G; h++) {
            int32_t *o = dot + (int64_t)h * stride + (int64_t)(t - t0) * KT;
            _mm256_storeu_si256((__m256i *)o, lo[h]);
            _mm256_storeu_si256((__m256i *)(o + 8), hi[h]);
        }
    }
}
#endif

/* scores, softmax and the weighted sum of values for G heads (plain C; the compiler
 * vectorises it per level) */
INLINE void softmax_values(int G, int D, const int32_t *eq, const int32_t *dot, int stride,
                           int off, const double *ksd, const int8_t *vc, const double *vsd,
                           int n, const int32_t *exp32, double *z, double *acc, int64_t *y) {
    for (int h = 0; h < G; h++) {
        const int32_t *dh = dot + (int64_t)h * stride + off;
        double *zh = z + (int64_t)h * n, c = pow2d(eq[h]), zmax = -1e300;
        for (int j = 0; j < n; j++) {
            double v = floor((double)dh[j] * ksd[j] * c);
            zh[j] = v;
            zmax = v > zmax ? v : zmax;
        }
        int64_t den = 0;
        for (int j = 0; j < n; j++) {
            double dd = zmax - zh[j];
            /* 2^-x is 0 from a shift of 31 on (table values <= 2^30): clamp there, so
               that the int32 shift stays below 32 */
            int32_t di = dd > 31744.0 ? 31744 : (int32_t)dd;
            int32_t ev = exp32[di & 1023] >> (di >> 10);
            zh[j] = (double)ev;
            den += ev;
        }
        int64_t R;
        int sh;
        prob_scale(den, (int64_t)1 << 16, &R, &sh);
        double scale = (double)R * pow2d(-sh);          /* R 2^-sh: exact */
        for (int j = 0; j < n; j++)                    /* w = floor(e R 2^-sh) * vs */
            zh[j] = floor(zh[j] * scale) * vsd[j];       /* e R < 2^52; w < 2^40: exact */
    }
    for (int64_t x = 0; x < (int64_t)G * D; x++) acc[x] = 0.0;
    for (int j = 0; j < n; j++) {
        const int8_t *v = vc + (int64_t)j * D;
        for (int h = 0; h < G; h++) {
            double w = z[(int64_t)h * n + j];
            if (w == 0.0) continue;
            double *ah = acc + (int64_t)h * D;
            for (int d = 0; d < D; d++) ah[d] += w * (double)v[d];
        }
    }
    for (int64_t x = 0; x < (int64_t)G * D; x++) y[x] = floor_div((int64_t)acc[x], (int64_t)127 << 16);
}

#define SM_ARGS int G, int D, const int32_t *eq, const int32_t *dot, int stride, int off, \
    const double *ksd, const int8_t *vc, const double *vsd, int n, const int32_t *exp32,  \
    double *z, double *acc, int64_t *y
#define SM_CALL G, D, eq, dot, stride, off, ksd, vc, vsd, n, exp32, z, acc, y
static void softmax_values_portable(SM_ARGS) { softmax_values(SM_CALL); }
#ifdef HAVE_LEVELS
T_AVX2 static void softmax_values_avx2(SM_ARGS) { softmax_values(SM_CALL); }
T_AVX512 static void softmax_values_avx512(SM_ARGS) { softmax_values(SM_CALL); }
#endif

/* For each row i (segment row_b[i], position row_pos[i]) and kv head g: the G = H/K
 * query heads of g over positions lo..p (lo = p - window + 1 when window > 0).
 * y (M, H*D) int64 Q12. level: 0 portable, 1 AVX2, 2 AVX-512 (the caller checks). */
EXPORT int llmzip_ex_attention(int M, int H, int K, int D, const int16_t *q16, const int32_t *eq,
                               const int32_t *row_b, const int32_t *row_pos, const int8_t *kt,
                               const double *ksd, const int8_t *vc, const double *vsd,
                               int Smax, int window, const int32_t *exp32, int64_t *y,
                               int level, int threads) {
    int G = H / K, bad = 0;
    if (G > MAXG || D % 2) return 1;
    PARALLEL_FOR_BAD(threads)
    for (int64_t ig = 0; ig < (int64_t)M * K; ig++) {
        int i = (int)(ig / K), g = (int)(ig % K);
        int p = row_pos[i];
        int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        int n = p - lo + 1, t0 = lo / KT, t1 = p / KT + 1;
        int stride = (t1 - t0) * KT;
        int32_t *dot = malloc(sizeof(int32_t) * G * stride);
        double *z = malloc(sizeof(double) * G * n);
        double *acc = malloc(sizeof(double) * G * D);
        if (!dot || !z || !acc) { free(dot); free(z); free(acc); bad = 1; continue; }
        int64_t base = ((int64_t)row_b[i] * K + g) * Smax;
        const int16_t *q = q16 + ((int64_t)i * H + (int64_t)g * G) * D;
        const int32_t *eqh = eq + (int64_t)i * H + (int64_t)g * G;
        int64_t *out = y + ((int64_t)i * H + (int64_t)g * G) * D;
        const int8_t *ktb = kt + base * D;
        int off = lo - t0 * KT;
#ifdef HAVE_LEVELS
        if (level == 2) {
            dots_avx512(G, D, q, ktb, t0, t1, dot, stride);
            softmax_values_avx512(G, D, eqh, dot, stride, off, ksd + base + lo, vc + (base + lo) * D,
                                  vsd + base + lo, n, exp32, z, acc, out);
        } else if (level == 1) {
            dots_avx2(G, D, q, ktb, t0, t1, dot, stride);
            softmax_values_avx2(G, D, eqh, dot, stride, off, ksd + base + lo, vc + (base + lo) * D,
                                vsd + base + lo, n, exp32, z, acc, out);
        } else
#endif
        {
            dots_portable(G, D, q, ktb, t0, t1, dot, stride);
            softmax_values_portable(G, D, eqh, dot, stride, off, ksd + base + lo,
                                    vc + (base + lo) * D, vsd + base + lo, n, exp32, z, acc, out);
        }
        free(dot); free(z); free(acc);
    }
    return bad ? 2 : 0;
}

/* ---- output layer to frequency tables ------------------------------------------- */
/* logits l = rsr(acc * mult, shift - e) (Q10 bits; acc * mult <= 2^52, so float64
 * holds it, and floor((x + 2^(s-1)) 2^-s) is exact for 0 < s <= 52); e_v = exp2neg(max
 * - l_v); f_v = 1 + floor(e_v R / 2^sh) (prob_scale with total 2^P - V); the remainder
 * goes to the first v with the largest logit. */
INLINE void freqs_body(int V, const int32_t *a, const int64_t *mult, int s,
                       const int64_t *exp_t, int precision, double *l, int64_t *ev,
                       int32_t *f) {
    int64_t spare = ((int64_t)1 << precision) - V;
    double top = -1e300;
    int first = 0;
    if (s > 0 && s <= 52) {
        double half = pow2d(s - 1), inv = pow2d(-s);
        for (int v = 0; v < V; v++) l[v] = floor(((double)a[v] * (double)mult[v] + half) * inv);
    } else {
        for (int v = 0; v < V; v++) l[v] = (double)rsr((int64_t)a[v] * mult[v], s);
    }
    for (int v = 0; v < V; v++) if (l[v] > top) { top = l[v]; first = v; }
    int64_t sum = 0;
    for (int v = 0; v < V; v++) {
        double dd = top - l[v];
        int32_t di = dd > 65535.0 ? 65535 : (int32_t)dd;
        ev[v] = exp_t[di & 1023] >> (di >> 10);
        sum += ev[v];
    }
    int64_t R;
    int sh;
    prob_scale(sum, spare, &R, &sh);
    double scale = pow2d(-sh);
    int64_t total = 0;
    for (int v = 0; v < V; v++) {
        f[v] = 1 + (int32_t)floor((double)ev[v] * (double)R * scale);
        total += f[v];
    }
    f[first] += (int32_t)(((int64_t)1 << precision) - total);
}

#define FREQS_ARGS int V, const int32_t *a, const int64_t *mult, int s, \
    const int64_t *exp_t, int precision, double *l, int64_t *ev, int32_t *f
#define FREQS_CALL V, a, mult, s, exp_t, precision, l, ev, f
static void freqs_portable(FREQS_ARGS) { freqs_body(FREQS_CALL); }
#ifdef HAVE_LEVELS
T_AVX2 static void freqs_avx2(FREQS_ARGS) { freqs_body(FREQS_CALL); }
T_AVX512 static void freqs_avx512(FREQS_ARGS) { freqs_body(FREQS_CALL); }
#endif

EXPORT int llmzip_ex_freqs(int M, int V, const int32_t *acc, const int64_t *mult, int shift,
                           const int32_t *e, const int64_t *exp_t, int precision,
                           int32_t *freqs, int level, int threads) {
    int bad = 0;
    PARALLEL_FOR_BAD(threads)
    for (int i = 0; i < M; i++) {
        double *l = malloc(sizeof(double) * V);
        int64_t *ev = malloc(sizeof(int64_t) * V);
        if (!l || !ev) { free(l); free(ev); bad = 1; continue; }
        const int32_t *a = acc + (int64_t)i * V;
        int32_t *f = freqs + (int64_t)i * V;
#ifdef HAVE_LEVELS
        if (level == 2) freqs_avx512(V, a, mult, shift - e[i], exp_t, precision, l, ev, f);
        else if (level == 1) freqs_avx2(V, a, mult, shift - e[i], exp_t, precision, l, ev, f);
        else
#endif
            freqs_portable(V, a, mult, shift - e[i], exp_t, precision, l, ev, f);
        free(l); free(ev);
    }
    return bad ? 2 : 0;
}

/* The widest level this CPU runs (see "SIMD levels" above). */
EXPORT int llmzip_ex_max_level(void) {
#ifdef HAVE_LEVELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}
