/* The exact engine's attention and frequency-table kernels (docs/engine.md): scores,
 * softmax and the weighted sum of values over the KV cache, and the output layer's
 * integer frequency tables. Exact like everything here: float64 only ever holds
 * integers (times powers of two) below 2^53, so any vector width and any order of
 * summation give the reference's integers.
 */
#include "exact_common.h"

#define KT 16                 /* key tile: positions side by side (exact_ops.c writes them) */

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

#define Z_CLAMP 1073741824.0          /* scores and logits: +-2^30 (reference.Z_CLAMP) */

/* Scores of one head, clamped, as int32, and their maximum (plain C that vectorises). */
INLINE int32_t scores(const int32_t *dot, const double *ksd, double c, int n, int32_t *z) {
    int32_t zmax = INT32_MIN;
    for (int j = 0; j < n; j++) {
        double v = floor((double)dot[j] * ksd[j] * c);   /* exact: dot km < 2^53 */
        v = v < -Z_CLAMP ? -Z_CLAMP : v > Z_CLAMP ? Z_CLAMP : v;
        z[j] = (int32_t)v;
    }
    for (int j = 0; j < n; j++) zmax = z[j] > zmax ? z[j] : zmax;
    return zmax;
}

/* e_j = exp2neg(zmax - z_j) (0 from a shift of 31 on: table values are <= 2^30); sum */
INLINE int64_t weights(const int32_t *z, int32_t zmax, int n, const int32_t *exp32, int32_t *e) {
    int64_t den = 0;
    for (int j = 0; j < n; j++) {
        uint32_t d = (uint32_t)(zmax - z[j]);            /* 0 .. 2^31 */
        uint32_t sh = d >> 10;
        sh = sh > 31 ? 31 : sh;
        e[j] = exp32[d & 1023] >> sh;
        den += e[j];
    }
    return den;
}

/* the weighted sum of one head's values: acc[d] += w_j v_jd over the j with w_j != 0 */
INLINE void values_portable(int D, int n, const double *w, const int8_t *vc, double *acc) {
    for (int j = 0; j < n; j++) {
        double wj = w[j];
        if (wj == 0.0) continue;
        const int8_t *v = vc + (int64_t)j * D;
        for (int d = 0; d < D; d++) acc[d] += wj * (double)v[d];
    }
}

#ifdef HAVE_LEVELS
/* the same, 32 dimensions at a time in four registers (D a multiple of 32) */
T_AVX512 static void values_avx512(int D, int n, const double *w, const int8_t *vc,
                                   double *acc) {
    for (int d0 = 0; d0 < D; d0 += 32) {
        __m512d a0 = _mm512_loadu_pd(acc + d0), a1 = _mm512_loadu_pd(acc + d0 + 8);
        __m512d a2 = _mm512_loadu_pd(acc + d0 + 16), a3 = _mm512_loadu_pd(acc + d0 + 24);
        for (int j = 0; j < n; j++) {
            if (w[j] == 0.0) continue;
            __m512d wj = _mm512_set1_pd(w[j]);
            const int8_t *v = vc + (int64_t)j * D + d0;
            __m512i lo = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)v));
            __m512i hi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(v + 16)));
            a0 = _mm512_fmadd_pd(wj, _mm512_cvtepi32_pd(_mm512_castsi512_si256(lo)), a0);
            a1 = _mm512_fmadd_pd(wj, _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(lo, 1)), a1);
            a2 = _mm512_fmadd_pd(wj, _mm512_cvtepi32_pd(_mm512_castsi512_si256(hi)), a2);
            a3 = _mm512_fmadd_pd(wj, _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(hi, 1)), a3);
        }
        _mm512_storeu_pd(acc + d0, a0);
        _mm512_storeu_pd(acc + d0 + 8, a1);
        _mm512_storeu_pd(acc + d0 + 16, a2);
        _mm512_storeu_pd(acc + d0 + 24, a3);
    }
}

T_AVX2 static void values_avx2(int D, int n, const double *w, const int8_t *vc, double *acc) {
    for (int d0 = 0; d0 < D; d0 += 16) {
        __m256d a0 = _mm256_loadu_pd(acc + d0), a1 = _mm256_loadu_pd(acc + d0 + 4);
        __m256d a2 = _mm256_loadu_pd(acc + d0 + 8), a3 = _mm256_loadu_pd(acc + d0 + 12);
        for (int j = 0; j < n; j++) {
            if (w[j] == 0.0) continue;
            __m256d wj = _mm256_set1_pd(w[j]);
            __m256i v32 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(vc + (int64_t)j * D + d0)));
            __m256i v32b = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(vc + (int64_t)j * D + d0 + 8)));
            a0 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_castsi256_si128(v32)), a0);
            a1 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_extracti128_si256(v32, 1)), a1);
            a2 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_castsi256_si128(v32b)), a2);
            a3 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_extracti128_si256(v32b, 1)), a3);
        }
        _mm256_storeu_pd(acc + d0, a0);
        _mm256_storeu_pd(acc + d0 + 4, a1);
        _mm256_storeu_pd(acc + d0 + 8, a2);
        _mm256_storeu_pd(acc + d0 + 12, a3);
    }
}
#endif

/* scores, softmax and weights w = p vs for G heads (z: G * n doubles of scratch, used as
 * int32 scores, then int32 weights, then the doubles w) */
INLINE void softmax_values(int G, int D, const int32_t *eq, const int32_t *dot, int stride,
                           int off, const double *ksd, const int8_t *vc, const double *vsd,
                           int n, const int32_t *exp32, double *z, double *acc, int64_t *y,
                           int level) {
    for (int h = 0; h < G; h++) {
        double *w = z + (int64_t)h * n;
        int32_t *zi = (int32_t *)w;                   /* n int32 fit in the first half */
        int32_t zmax = scores(dot + (int64_t)h * stride + off, ksd, pow2d(eq[h]), n, zi);
        int32_t *ei = zi + n;                         /* ... and n more in the second */
        int64_t den = weights(zi, zmax, n, exp32, ei);
        int64_t R;
        int sh;
        prob_scale(den, (int64_t)1 << 16, &R, &sh);
        double scale = (double)R * pow2d(-sh);        /* R 2^-sh: exact */
        for (int j = 0; j < n; j++)                   /* w = floor(e R 2^-sh) vs */
            w[j] = floor((double)ei[j] * scale) * vsd[j];  /* e R < 2^52, w < 2^40 */
        double *ah = acc + (int64_t)h * D;
        for (int d = 0; d < D; d++) ah[d] = 0.0;
#ifdef HAVE_LEVELS
        if (level == 2 && D % 32 == 0) values_avx512(D, n, w, vc, ah);
        else if (level >= 1 && D % 16 == 0) values_avx2(D, n, w, vc, ah);
        else
#endif
            values_portable(D, n, w, vc, ah);
    }
    for (int64_t x = 0; x < (int64_t)G * D; x++) y[x] = floor_div((int64_t)acc[x], (int64_t)127 << 16);
}

#define SM_ARGS int G, int D, const int32_t *eq, const int32_t *dot, int stride, int off, \
    const double *ksd, const int8_t *vc, const double *vsd, int n, const int32_t *exp32,  \
    double *z, double *acc, int64_t *y, int level
#define SM_CALL G, D, eq, dot, stride, off, ksd, vc, vsd, n, exp32, z, acc, y, level
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
                                  vsd + base + lo, n, exp32, z, acc, out, 2);
        } else if (level == 1) {
            dots_avx2(G, D, q, ktb, t0, t1, dot, stride);
            softmax_values_avx2(G, D, eqh, dot, stride, off, ksd + base + lo, vc + (base + lo) * D,
                                vsd + base + lo, n, exp32, z, acc, out, 1);
        } else
#endif
        {
            dots_portable(G, D, q, ktb, t0, t1, dot, stride);
            softmax_values_portable(G, D, eqh, dot, stride, off, ksd + base + lo,
                                    vc + (base + lo) * D, vsd + base + lo, n, exp32, z, acc, out, 0);
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
                       const int32_t *exp32, int precision, double *l, int32_t *ev,
                       int32_t *f) {
    int64_t spare = ((int64_t)1 << precision) - V;
    int32_t *li = (int32_t *)l;                   /* int32 logits in the first half */
    if (s > 0 && s <= 52) {
        double half = pow2d(s - 1), inv = pow2d(-s);
        for (int v = 0; v < V; v++) {
            double x = floor(((double)a[v] * (double)mult[v] + half) * inv);
            x = x < -Z_CLAMP ? -Z_CLAMP : x > Z_CLAMP ? Z_CLAMP : x;
            li[v] = (int32_t)x;
        }
    } else {
        for (int v = 0; v < V; v++) {
            int64_t x = rsr((int64_t)a[v] * mult[v], s);
            li[v] = (int32_t)(x < -(1 << 30) ? -(1 << 30) : x > (1 << 30) ? (1 << 30) : x);
        }
    }
    int32_t top = INT32_MIN;
    for (int v = 0; v < V; v++) top = li[v] > top ? li[v] : top;
    int first = 0;
    while (li[first] != top) first++;
    int64_t sum = weights(li, top, V, exp32, ev);
    int64_t R;
    int sh;
    prob_scale(sum, spare, &R, &sh);
    double scale = (double)R * pow2d(-sh);
    int64_t total = 0;
    for (int v = 0; v < V; v++) {
        f[v] = 1 + (int32_t)floor((double)ev[v] * scale);  /* e R < 2^52: exact */
        total += f[v];
    }
    f[first] += (int32_t)(((int64_t)1 << precision) - total);
}

#define FREQS_ARGS int V, const int32_t *a, const int64_t *mult, int s, \
    const int32_t *exp32, int precision, double *l, int32_t *ev, int32_t *f
#define FREQS_CALL V, a, mult, s, exp32, precision, l, ev, f
static void freqs_portable(FREQS_ARGS) { freqs_body(FREQS_CALL); }
#ifdef HAVE_LEVELS
T_AVX2 static void freqs_avx2(FREQS_ARGS) { freqs_body(FREQS_CALL); }
T_AVX512 static void freqs_avx512(FREQS_ARGS) { freqs_body(FREQS_CALL); }
#endif

EXPORT int llmzip_ex_freqs(int M, int V, const int32_t *acc, const int64_t *mult, int shift,
                           const int32_t *e, const int32_t *exp32, int precision,
                           int32_t *freqs, int level, int threads) {
    int bad = 0;
    PARALLEL_FOR_BAD(threads)
    for (int i = 0; i < M; i++) {
        double *l = malloc(sizeof(double) * V);
        int32_t *ev = malloc(sizeof(int32_t) * V);
        if (!l || !ev) { free(l); free(ev); bad = 1; continue; }
        const int32_t *a = acc + (int64_t)i * V;
        int32_t *f = freqs + (int64_t)i * V;
#ifdef HAVE_LEVELS
        if (level == 2) freqs_avx512(V, a, mult, shift - e[i], exp32, precision, l, ev, f);
        else if (level == 1) freqs_avx2(V, a, mult, shift - e[i], exp32, precision, l, ev, f);
        else
#endif
            freqs_portable(V, a, mult, shift - e[i], exp32, precision, l, ev, f);
        free(l); free(ev);
    }
    return bad ? 2 : 0;
}

