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

/* one tile of 16 positions for GG heads; named accumulators (an array of vectors gets
   spilled to the stack by gcc 12) */
#define DOTS_GG(GG)                                                                         \
T_AVX512 static void dots##GG##_avx512(int D, const int16_t *q, const int8_t *kt, int t0,   \
                                      int t1, int32_t *dot, int stride) {                   \
    for (int t = t0; t < t1; t++) {                                                         \
        const int8_t *tile = kt + (int64_t)t * KT * D;                                      \
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;                     \
        for (int dp = 0; dp < D / 2; dp++) {                                                \
            __m512i k = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(tile + dp * 2 * KT))); \
            int32_t pr;                                                                     \
            memcpy(&pr, q + 2 * dp, 4);                                                     \
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(k, _mm512_set1_epi32(pr)));         \
            if (GG > 1) { memcpy(&pr, q + D + 2 * dp, 4);                                   \
                a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(k, _mm512_set1_epi32(pr))); }   \
            if (GG > 2) { memcpy(&pr, q + 2 * D + 2 * dp, 4);                               \
                a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(k, _mm512_set1_epi32(pr))); }   \
            if (GG > 3) { memcpy(&pr, q + 3 * D + 2 * dp, 4);                               \
                a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(k, _mm512_set1_epi32(pr))); }   \
        }                                                                                   \
        int32_t *o = dot + (int64_t)(t - t0) * KT;                                          \
        _mm512_storeu_si512(o, a0);                                                         \
        if (GG > 1) _mm512_storeu_si512(o + stride, a1);                                    \
        if (GG > 2) _mm512_storeu_si512(o + 2 * (int64_t)stride, a2);                       \
        if (GG > 3) _mm512_storeu_si512(o + 3 * (int64_t)stride, a3);                       \
    }                                                                                       \
}
DOTS_GG(1)
DOTS_GG(2)
DOTS_GG(3)
DOTS_GG(4)

/* AVX-512 VNNI (level 3): vpdpwssd adds the pair products straight into the sums, and its
 * dword broadcast is folded into the instruction (one instruction per head and pair
 * instead of three) */
INLINE int32_t pair_at(const int16_t *q, int i) { int32_t v; memcpy(&v, q + i, 4); return v; }
#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")))
#define DOTS_VNNI_GG(GG)                                                                   \
T_VNNI static void dots##GG##_vnni(int D, const int16_t *q, const int8_t *kt, int t0,     \
                                  int t1, int32_t *dot, int stride) {                      \
    for (int t = t0; t < t1; t++) {                                                        \
        const int8_t *tile = kt + (int64_t)t * KT * D;                                     \
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;                    \
        for (int dp = 0; dp < D / 2; dp++) {                                               \
            __m512i k = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(tile + dp * 2 * KT))); \
            a0 = _mm512_dpwssd_epi32(a0, k, _mm512_set1_epi32(pair_at(q, 2 * dp)));                    \
            if (GG > 1) a1 = _mm512_dpwssd_epi32(a1, k, _mm512_set1_epi32(pair_at(q, D + 2 * dp)));     \
            if (GG > 2) a2 = _mm512_dpwssd_epi32(a2, k, _mm512_set1_epi32(pair_at(q, 2 * D + 2 * dp)));         \
            if (GG > 3) a3 = _mm512_dpwssd_epi32(a3, k, _mm512_set1_epi32(pair_at(q, 3 * D + 2 * dp))); \
        }                                                                                  \
        int32_t *o = dot + (int64_t)(t - t0) * KT;                                         \
        _mm512_storeu_si512(o, a0);                                                        \
        if (GG > 1) _mm512_storeu_si512(o + stride, a1);                                   \
        if (GG > 2) _mm512_storeu_si512(o + 2 * (int64_t)stride, a2);                      \
        if (GG > 3) _mm512_storeu_si512(o + 3 * (int64_t)stride, a3);                      \
    }                                                                                      \
}
DOTS_VNNI_GG(1)
DOTS_VNNI_GG(2)
DOTS_VNNI_GG(3)
DOTS_VNNI_GG(4)

T_AVX512 static void dots_avx512(int G, int D, const int16_t *q, const int8_t *kt, int t0,
                                 int t1, int32_t *dot, int stride, int vnni) {
    for (int h0 = 0; h0 < G; h0 += 4) {
        int g = G - h0 < 4 ? G - h0 : 4;
        const int16_t *qh = q + (int64_t)h0 * D;
        int32_t *dh = dot + (int64_t)h0 * stride;
        if (vnni) {
            if (g == 1) dots1_vnni(D, qh, kt, t0, t1, dh, stride);
            else if (g == 2) dots2_vnni(D, qh, kt, t0, t1, dh, stride);
            else if (g == 3) dots3_vnni(D, qh, kt, t0, t1, dh, stride);
            else dots4_vnni(D, qh, kt, t0, t1, dh, stride);
        } else if (g == 1) dots1_avx512(D, qh, kt, t0, t1, dh, stride);
        else if (g == 2) dots2_avx512(D, qh, kt, t0, t1, dh, stride);
        else if (g == 3) dots3_avx512(D, qh, kt, t0, t1, dh, stride);
        else dots4_avx512(D, qh, kt, t0, t1, dh, stride);
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

/* The weighted sums of G heads' values: acc[h][d] += w[h][j] v_jd over the positions j
 * where some head's weight is not 0 (w: G rows of n doubles; acc: G rows of D). */
INLINE void values_portable(int G, int D, int n, const double *w, const int8_t *vc,
                            double *acc) {
    for (int j = 0; j < n; j++) {
        const int8_t *v = vc + (int64_t)j * D;
        for (int h = 0; h < G; h++) {
            double wj = w[(int64_t)h * n + j];
            if (wj == 0.0) continue;
            double *ah = acc + (int64_t)h * D;
            for (int d = 0; d < D; d++) ah[d] += wj * (double)v[d];
        }
    }
}

#ifdef HAVE_LEVELS
/* AVX-512: 32 dimensions at a time over the positions in idx (those where some head's
 * weight is not 0), the values converted once for GG heads (GG x 4 accumulators in
 * registers); weights w = p vs (p: int32 Q16, vs: the values' scale; exact in float64);
 * one function per GG = 1..4, so the head loops unroll */
#define VALUES_GG(GG)                                                                      \
T_AVX512 static void values##GG##_avx512(int D, int n, const int32_t *p, const double *vsd, \
                                         const int32_t *idx, int m, const int8_t *vc,      \
                                         double *acc) {                                    \
    for (int d0 = 0; d0 < D; d0 += 32) {                                                   \
        __m512d a[GG][4];                                                                  \
        for (int h = 0; h < GG; h++)                                                       \
            for (int q = 0; q < 4; q++) a[h][q] = _mm512_loadu_pd(acc + (int64_t)h * D + d0 + 8 * q); \
        for (int t = 0; t < m; t++) {                                                      \
            const int j = idx[t];                                                          \
            if (t + 6 < m) _mm_prefetch((const char *)(vc + (int64_t)idx[t + 6] * D + d0), _MM_HINT_T0); \
            const int8_t *v = vc + (int64_t)j * D + d0;                                    \
            __m512i lo = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)v));        \
            __m512i hi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(v + 16))); \
            __m512d x0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(lo));                   \
            __m512d x1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(lo, 1));             \
            __m512d x2 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(hi));                   \
            __m512d x3 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(hi, 1));             \
            const double vs = vsd[j];                                                      \
            for (int h = 0; h < GG; h++) {                                                 \
                __m512d b = _mm512_set1_pd((double)p[(int64_t)h * n + j] * vs);            \
                a[h][0] = _mm512_fmadd_pd(b, x0, a[h][0]);                                 \
                a[h][1] = _mm512_fmadd_pd(b, x1, a[h][1]);                                 \
                a[h][2] = _mm512_fmadd_pd(b, x2, a[h][2]);                                 \
                a[h][3] = _mm512_fmadd_pd(b, x3, a[h][3]);                                 \
            }                                                                              \
        }                                                                                  \
        for (int h = 0; h < GG; h++)                                                       \
            for (int q = 0; q < 4; q++) _mm512_storeu_pd(acc + (int64_t)h * D + d0 + 8 * q, a[h][q]); \
    }                                                                                      \
}
VALUES_GG(1)
VALUES_GG(2)
VALUES_GG(3)
VALUES_GG(4)

/* the positions where one of g heads' weights p is not 0: idx[0..m), 16 at a time */
T_AVX512 static int nonzero_positions(int g, int n, const int32_t *p, int32_t *idx) {
    int m = 0, j = 0;
    const __m512i step = _mm512_set1_epi32(16);
    __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= n; j += 16, pos = _mm512_add_epi32(pos, step)) {
        __m512i any = _mm512_loadu_si512(p + j);
        for (int h = 1; h < g; h++) any = _mm512_or_si512(any, _mm512_loadu_si512(p + (int64_t)h * n + j));
        __mmask16 k = _mm512_test_epi32_mask(any, any);
        _mm512_mask_compressstoreu_epi32(idx + m, k, pos);
        m += __builtin_popcount(k);
    }
    for (; j < n; j++) {
        int any = 0;
        for (int h = 0; h < g; h++) any |= p[(int64_t)h * n + j];
        idx[m] = j;
        m += any != 0;
    }
    return m;
}

T_AVX512 static void values_avx512(int G, int D, int n, const int32_t *p, const double *vsd,
                                   const int8_t *vc, double *acc, int32_t *idx) {
    for (int h0 = 0; h0 < G; h0 += 4) {
        int g = G - h0 < 4 ? G - h0 : 4;
        const int32_t *ph = p + (int64_t)h0 * n;
        double *ah = acc + (int64_t)h0 * D;
        int m = nonzero_positions(g, n, ph, idx);
        if (g == 1) values1_avx512(D, n, ph, vsd, idx, m, vc, ah);
        else if (g == 2) values2_avx512(D, n, ph, vsd, idx, m, vc, ah);
        else if (g == 3) values3_avx512(D, n, ph, vsd, idx, m, vc, ah);
        else values4_avx512(D, n, ph, vsd, idx, m, vc, ah);
    }
}

/* AVX-512: p_j = floor(e_j * R 2^-sh) as int32 (e R < 2^52: exact) */
T_AVX512 static void probs_avx512(const int32_t *e, double scale, int n, int32_t *p) {
    const __m512d sc = _mm512_set1_pd(scale);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m512d x = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(e + j))), sc);
        x = _mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256((__m256i *)(p + j), _mm512_cvttpd_epi32(x));
    }
    for (; j < n; j++) p[j] = (int32_t)floor((double)e[j] * scale);
}

/* AVX-512: scores of one head (8 positions a time), clamped, as int32; their maximum */
T_AVX512 static int32_t scores_avx512(const int32_t *dot, const double *ksd, double c, int n,
                                      int32_t *z) {
    const __m512d cz = _mm512_set1_pd(c), lo = _mm512_set1_pd(-Z_CLAMP),
                  hi = _mm512_set1_pd(Z_CLAMP);
    __m256i mx = _mm256_set1_epi32(INT32_MIN);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m512d d = _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(dot + j)));
        __m512d v = _mm512_roundscale_pd(_mm512_mul_pd(_mm512_mul_pd(d, _mm512_loadu_pd(ksd + j)), cz),
                                         _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        v = _mm512_min_pd(_mm512_max_pd(v, lo), hi);
        __m256i zi = _mm512_cvttpd_epi32(v);
        _mm256_storeu_si256((__m256i *)(z + j), zi);
        mx = _mm256_max_epi32(mx, zi);
    }
    int32_t m[8], zmax = INT32_MIN;
    _mm256_storeu_si256((__m256i *)m, mx);
    for (int q = 0; q < 8; q++) zmax = m[q] > zmax ? m[q] : zmax;
    for (; j < n; j++) {
        double v = floor((double)dot[j] * ksd[j] * c);
        v = v < -Z_CLAMP ? -Z_CLAMP : v > Z_CLAMP ? Z_CLAMP : v;
        z[j] = (int32_t)v;
        zmax = z[j] > zmax ? z[j] : zmax;
    }
    return zmax;
}

/* AVX-512: e_j = exp2neg(zmax - z_j) (16 a time, table gathers), and their sum */
T_AVX512 static int64_t weights_avx512(const int32_t *z, int32_t zmax, int n,
                                       const int32_t *exp32, int32_t *e) {
    const __m512i zm = _mm512_set1_epi32(zmax), m1023 = _mm512_set1_epi32(1023),
                  c31 = _mm512_set1_epi32(31);
    __m512i sum = _mm512_setzero_si512();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i d = _mm512_sub_epi32(zm, _mm512_loadu_si512((const void *)(z + j)));
        __m512i sh = _mm512_min_epu32(_mm512_srli_epi32(d, 10), c31);
        __m512i t = _mm512_i32gather_epi32(_mm512_and_si512(d, m1023), exp32, 4);
        __m512i ev = _mm512_srlv_epi32(t, sh);
        _mm512_storeu_si512((void *)(e + j), ev);
        sum = _mm512_add_epi64(sum, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(ev)));
        sum = _mm512_add_epi64(sum, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(ev, 1)));
    }
    int64_t den = _mm512_reduce_add_epi64(sum);
    for (; j < n; j++) {
        uint32_t d = (uint32_t)(zmax - z[j]);
        uint32_t sh = d >> 10;
        sh = sh > 31 ? 31 : sh;
        e[j] = exp32[d & 1023] >> sh;
        den += e[j];
    }
    return den;
}

T_AVX2 static void values_avx2(int G, int D, int n, const double *w, const int8_t *vc,
                               double *acc) {
    for (int h = 0; h < G; h++) {
        const double *wh = w + (int64_t)h * n;
        double *ah = acc + (int64_t)h * D;
        for (int d0 = 0; d0 < D; d0 += 16) {
            __m256d a0 = _mm256_loadu_pd(ah + d0), a1 = _mm256_loadu_pd(ah + d0 + 4);
            __m256d a2 = _mm256_loadu_pd(ah + d0 + 8), a3 = _mm256_loadu_pd(ah + d0 + 12);
            for (int j = 0; j < n; j++) {
                if (wh[j] == 0.0) continue;
                __m256d wj = _mm256_set1_pd(wh[j]);
                const int8_t *v = vc + (int64_t)j * D + d0;
                __m256i v0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)v));
                __m256i v1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(v + 8)));
                a0 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_castsi256_si128(v0)), a0);
                a1 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_extracti128_si256(v0, 1)), a1);
                a2 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_castsi256_si128(v1)), a2);
                a3 = _mm256_fmadd_pd(wj, _mm256_cvtepi32_pd(_mm256_extracti128_si256(v1, 1)), a3);
            }
            _mm256_storeu_pd(ah + d0, a0);
            _mm256_storeu_pd(ah + d0 + 4, a1);
            _mm256_storeu_pd(ah + d0 + 8, a2);
            _mm256_storeu_pd(ah + d0 + 12, a3);
        }
    }
}
#endif

/* scores, softmax and the weighted sums of values for G heads. Scratch z: G * n doubles
 * (the weights w = p vs of each head; level 2 uses the same bytes as G * n int32 p),
 * followed by 2n int32 (one head's scores and 2^-x weights, then the position list). */
INLINE void softmax_values(int G, int D, const int32_t *eq, const int32_t *dot, int stride,
                           int off, const double *ksd, const int8_t *vc, const double *vsd,
                           int n, const int32_t *exp32, double *z, double *acc, int64_t *y,
                           int level) {
    int32_t *zi = (int32_t *)(z + (int64_t)G * n), *ei = zi + n;
    int32_t *pi = (int32_t *)z;                      /* level 2: p of every head */
    for (int h = 0; h < G; h++) {
        const int32_t *dh = dot + (int64_t)h * stride + off;
        int32_t zmax;
        int64_t den;
#ifdef HAVE_LEVELS
        if (level >= 2) {
            zmax = scores_avx512(dh, ksd, pow2d(eq[h]), n, zi);
            den = weights_avx512(zi, zmax, n, exp32, ei);
        } else
#endif
        {
            zmax = scores(dh, ksd, pow2d(eq[h]), n, zi);
            den = weights(zi, zmax, n, exp32, ei);
        }
        int64_t R;
        int sh;
        prob_scale(den, (int64_t)1 << 16, &R, &sh);
        double scale = (double)R * pow2d(-sh);        /* R 2^-sh: exact */
#ifdef HAVE_LEVELS
        if (level >= 2 && D % 32 == 0) {
            probs_avx512(ei, scale, n, pi + (int64_t)h * n);
            continue;
        }
#endif
        double *w = z + (int64_t)h * n;
        for (int j = 0; j < n; j++)                   /* w = floor(e R 2^-sh) vs */
            w[j] = floor((double)ei[j] * scale) * vsd[j];  /* e R < 2^52, w < 2^40 */
    }
    for (int64_t x = 0; x < (int64_t)G * D; x++) acc[x] = 0.0;
#ifdef HAVE_LEVELS
    if (level >= 2 && D % 32 == 0) values_avx512(G, D, n, pi, vsd, vc, acc, zi);
    else if (level >= 1 && D % 16 == 0) values_avx2(G, D, n, z, vc, acc);
    else
#endif
        values_portable(G, D, n, z, vc, acc);
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

typedef struct {
    int H, K, D, Smax, window, level;
    const int16_t *q16; const int32_t *eq, *row_b, *row_pos;
    const int8_t *kt; const double *ksd; const int8_t *vc; const double *vsd;
    const int32_t *exp32; int64_t *y;
} attention_ctx;

#ifdef HAVE_LEVELS
int amx_dots(int R, int D, const int16_t *q, const int8_t *kt, int t0, int t1, int32_t *dot);
int amx_values(int R, int D, int ns, const int32_t *p, const int64_t *sigma, int64_t wmax,
               const int8_t *v, int nvalid, int64_t *acc);

/* Level 4 (AMX): rows i0 .. i0 + nr - 1, consecutive positions of one segment, and kv
 * head g. Their nr G query heads share every key and value: the dot products and the
 * weighted sums are two matrix products on AMX tiles (exact_attention_amx.c), the
 * softmax of each row the same code as level 2's. Same integers as every level. */
T_AVX512 static int attention_block_amx(const attention_ctx *c, int i0, int nr, int g) {
    const int H = c->H, K = c->K, D = c->D, G = H / K, R = nr * G;
    const int p0 = c->row_pos[i0], pl = p0 + nr - 1;
    const int lo0 = c->window > 0 && p0 - c->window + 1 > 0 ? p0 - c->window + 1 : 0;
    const int t0 = lo0 / KT, t1 = pl / KT + 1, ns = (t1 - t0) * KT, s0 = t0 * KT;
    const int64_t base = ((int64_t)c->row_b[i0] * K + g) * c->Smax;
    int16_t *q = pool_scratch(SCR_ATT_Q, sizeof(int16_t) * (size_t)R * D);
    int32_t *dot = pool_scratch(SCR_ATT_DOT, sizeof(int32_t) * (size_t)R * ns);
    int32_t *p = pool_scratch(SCR_ATT_P, sizeof(int32_t) * (size_t)R * ns);
    int32_t *ze = pool_scratch(SCR_ATT_ZE, sizeof(int32_t) * 2 * (size_t)ns);
    int64_t *sigma = pool_scratch(SCR_ATT_SIGMA, sizeof(int64_t) * (size_t)ns);
    int64_t *acc = pool_scratch(SCR_ATT_ACC, sizeof(int64_t) * (size_t)R * D);
    int bad = !q || !dot || !p || !ze || !sigma || !acc;
    for (int r = 0; r < nr && !bad; r++)          /* row r's heads g G .. g G + G - 1 */
        memcpy(q + (int64_t)r * G * D, c->q16 + ((int64_t)(i0 + r) * H + (int64_t)g * G) * D,
               sizeof(int16_t) * (size_t)G * D);
    bad = bad || amx_dots(R, D, q, c->kt + base * D, t0, t1, dot);
    int64_t pmax = 0, smax = 0;
    for (int r = 0; r < nr && !bad; r++) {
        const int pos = p0 + r;
        const int lo = c->window > 0 && pos - c->window + 1 > 0 ? pos - c->window + 1 : 0;
        const int n = pos - lo + 1, off = lo - s0;
        for (int h = 0; h < G; h++) {
            const int qr = r * G + h;
            const int32_t zmax = scores_avx512(dot + (int64_t)qr * ns + off, c->ksd + base + lo,
                                               pow2d(c->eq[(int64_t)(i0 + r) * H + g * G + h]),
                                               n, ze);
            const int64_t den = weights_avx512(ze, zmax, n, c->exp32, ze + ns);
            int64_t Rs;
            int sh;
            prob_scale(den, (int64_t)1 << 16, &Rs, &sh);
            int32_t *pr = p + (int64_t)qr * ns + off;
            probs_avx512(ze + ns, (double)Rs * pow2d(-sh), n, pr);
            int32_t m = 0;
            for (int j = 0; j < n; j++) m = pr[j] > m ? pr[j] : m;
            pmax = m > pmax ? m : pmax;
            /* 0 where the row does not look */
            memset(p + (int64_t)qr * ns, 0, sizeof(int32_t) * (size_t)off);
            memset(pr + n, 0, sizeof(int32_t) * (size_t)(ns - off - n));
        }
    }
    for (int s = 0; s < ns && !bad; s++) {
        sigma[s] = s0 + s <= pl ? (int64_t)c->vsd[base + s0 + s] : 0;
        smax = sigma[s] > smax ? sigma[s] : smax;
    }
    bad = bad || amx_values(R, D, ns, p, sigma, pmax * smax, c->vc + (base + s0) * D,
                            pl - s0 + 1, acc);
    const int64_t div = (int64_t)127 << 16;
    const double inv = 1.0 / (double)div;
    for (int r = 0; r < nr && !bad; r++)
        for (int x = 0; x < G * D; x++)              /* |acc| < 2^47: floor_div_inv is exact */
            c->y[((int64_t)(i0 + r) * H + (int64_t)g * G) * D + x] =
                floor_div_inv(acc[(int64_t)r * G * D + x], div, inv);
    return bad;
}
#endif

/* item ig: row i = ig / K and its kv head g = ig % K */
static int attention_item(void *ctx, int64_t ig) {
    const attention_ctx *c = ctx;
    const int H = c->H, K = c->K, D = c->D, G = H / K, level = c->level;
    const int8_t *kt = c->kt, *vc = c->vc;
    const double *ksd = c->ksd, *vsd = c->vsd;
    const int32_t *exp32 = c->exp32;
    int i = (int)(ig / K), g = (int)(ig % K);
    int p = c->row_pos[i];
    int lo = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
    int n = p - lo + 1, t0 = lo / KT, t1 = p / KT + 1;
    int stride = (t1 - t0) * KT;
    int32_t *dot = malloc(sizeof(int32_t) * G * stride);
    double *z = malloc(sizeof(double) * G * n + sizeof(int32_t) * 2 * n);
    double *acc = malloc(sizeof(double) * G * D);
    if (!dot || !z || !acc) { free(dot); free(z); free(acc); return 1; }
    int64_t base = ((int64_t)c->row_b[i] * K + g) * c->Smax;
    const int16_t *q = c->q16 + ((int64_t)i * H + (int64_t)g * G) * D;
    const int32_t *eqh = c->eq + (int64_t)i * H + (int64_t)g * G;
    int64_t *out = c->y + ((int64_t)i * H + (int64_t)g * G) * D;
    const int8_t *ktb = kt + base * D;
    int off = lo - t0 * KT;
#ifdef HAVE_LEVELS
    if (level >= 2) {
        dots_avx512(G, D, q, ktb, t0, t1, dot, stride, level == 3);
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
    return 0;
}

/* Level 4 items: runs of rows of one segment at consecutive positions, up to AMX_Q rows;
 * a run shorter than AMX_MIN_Q (decoding steps) is done row by row at level 3 */
#define AMX_Q 16
#define AMX_MIN_Q 4

typedef struct {
    const attention_ctx *c;
    const int32_t *start, *len;     /* block k: rows start[k] .. start[k] + len[k] - 1 */
} blocks_ctx;

static int blocks_item(void *ctx, int64_t kg) {
    const blocks_ctx *bc = ctx;
    const attention_ctx *c = bc->c;
    const int k = (int)(kg / c->K), g = (int)(kg % c->K);
#ifdef HAVE_LEVELS
    if (bc->len[k] >= AMX_MIN_Q) return attention_block_amx(c, bc->start[k], bc->len[k], g);
#endif
    int bad = 0;
    for (int i = bc->start[k]; i < bc->start[k] + bc->len[k]; i++)
        bad |= attention_item((void *)c, (int64_t)i * c->K + g);
    return bad;
}

/* For each row i (segment row_b[i], position row_pos[i]) and kv head g: the G = H/K
 * query heads of g over positions lo..p (lo = p - window + 1 when window > 0).
 * y (M, H*D) int64 Q12. level: 0 portable, 1 AVX2, 2 AVX-512, 3 AVX-512 VNNI, 4 the same
 * with AMX (the caller checks). */
EXPORT int llmzip_ex_attention(int M, int H, int K, int D, const int16_t *q16, const int32_t *eq,
                               const int32_t *row_b, const int32_t *row_pos, const int8_t *kt,
                               const double *ksd, const int8_t *vc, const double *vsd,
                               int Smax, int window, const int32_t *exp32, int64_t *y,
                               int level, int threads) {
    if (H / K > MAXG || D % 2) return 1;
    attention_ctx c = {.H = H, .K = K, .D = D, .Smax = Smax, .window = window,
                       .level = level < 3 ? level : 3,
                       .q16 = q16, .eq = eq, .row_b = row_b, .row_pos = row_pos, .kt = kt,
                       .ksd = ksd, .vc = vc, .vsd = vsd, .exp32 = exp32, .y = y};
    /* level 4's int32 partial sums are exact for up to 65,536 positions */
    if (level < 4 || D % 64 || M < AMX_MIN_Q || Smax > 65536)
        return parallel_for((int64_t)M * K, threads, attention_item, &c) ? 2 : 0;
    int32_t *start = malloc(sizeof(int32_t) * 2 * (size_t)M);
    if (!start) return 2;
    int32_t *len = start + M;
    int nb = 0;
    for (int i = 0; i < M;) {
        int n = 1;
        while (i + n < M && n < AMX_Q && row_b[i + n] == row_b[i]
               && row_pos[i + n] == row_pos[i] + n)
            n++;
        start[nb] = i;
        len[nb++] = n;
        i += n;
    }
    blocks_ctx bc = {.c = &c, .start = start, .len = len};
    const int rc = parallel_for((int64_t)nb * K, threads, blocks_item, &bc) ? 2 : 0;
    free(start);
    return rc;
}

/* ---- output layer to frequency tables ------------------------------------------- */
/* logits l = rsr(acc * mult, shift - e) (Q10 bits; acc * mult <= 2^52, so float64
 * holds it, and floor((x + 2^(s-1)) 2^-s) is exact for 0 < s <= 52), clamped to
 * +-2^30; returns the largest. */
INLINE int32_t logits_body(int V, const int32_t *a, const int64_t *mult, int s, int32_t *li) {
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
    return top;
}

/* logits -> table: e_v = exp2neg(top - l_v); f_v = 1 + floor(e_v R / 2^sh) (prob_scale
 * with total 2^P - V); the remainder goes to the first v with the largest logit. */
INLINE void table_body(int V, const int32_t *li, int32_t top, const int32_t *exp32,
                       int precision, int32_t *ev, int32_t *f) {
    int first = 0;
    while (li[first] != top) first++;
    int64_t sum = weights(li, top, V, exp32, ev);
    int64_t R;
    int sh;
    prob_scale(sum, ((int64_t)1 << precision) - V, &R, &sh);
    double scale = (double)R * pow2d(-sh);
    int64_t total = 0;
    for (int v = 0; v < V; v++) {
        f[v] = 1 + (int32_t)floor((double)ev[v] * scale);  /* e R < 2^52: exact */
        total += f[v];
    }
    f[first] += (int32_t)(((int64_t)1 << precision) - total);
}

INLINE void freqs_body(int V, const int32_t *a, const int64_t *mult, int s,
                       const int32_t *exp32, int precision, int32_t *li, int32_t *ev,
                       int32_t *f) {
    table_body(V, li, logits_body(V, a, mult, s, li), exp32, precision, ev, f);
}

#define FREQS_ARGS int V, const int32_t *a, const int64_t *mult, int s, \
    const int32_t *exp32, int precision, int32_t *l, int32_t *ev, int32_t *f
#define FREQS_CALL V, a, mult, s, exp32, precision, l, ev, f
#define TABLE_ARGS int V, const int32_t *l, int32_t top, const int32_t *exp32, int precision, \
    int32_t *ev, int32_t *f
#define TABLE_CALL V, l, top, exp32, precision, ev, f
static void freqs_portable(FREQS_ARGS) { freqs_body(FREQS_CALL); }
static void table_portable(TABLE_ARGS) { table_body(TABLE_CALL); }
#ifdef HAVE_LEVELS
T_AVX2 static void freqs_avx2(FREQS_ARGS) { freqs_body(FREQS_CALL); }
T_AVX2 static void table_avx2(TABLE_ARGS) { table_body(TABLE_CALL); }
/* AVX-512: the same passes written out (the compiler did not vectorise the logits' int64
 * -> float64 conversion nor the table lookups) */
T_AVX512 static void table_avx512(TABLE_ARGS) {
    if (V < 16) { table_body(TABLE_CALL); return; }
    const int rd = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    int first = 0;
    while (l[first] != top) first++;
    int64_t sum = weights_avx512(l, top, V, exp32, ev);
    int64_t R;
    int sh;
    prob_scale(sum, ((int64_t)1 << precision) - V, &R, &sh);
    const double scale = (double)R * pow2d(-sh);
    const __m512d sc = _mm512_set1_pd(scale);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i tot16 = _mm512_setzero_si512();          /* lanes stay below 2^precision */
    int v;
    for (v = 0; v + 16 <= V; v += 16) {          /* f = 1 + floor(e R 2^-sh), exact */
        __m512i e16 = _mm512_loadu_si512((const void *)(ev + v));
        __m512d y0 = _mm512_roundscale_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(e16)), sc), rd);
        __m512d y1 = _mm512_roundscale_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(e16, 1)), sc), rd);
        __m512i f16 = _mm512_add_epi32(one, _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm512_cvtpd_epi32(y0)), _mm512_cvtpd_epi32(y1), 1));
        _mm512_storeu_si512((void *)(f + v), f16);
        tot16 = _mm512_add_epi32(tot16, f16);
    }
    int64_t total = _mm512_reduce_add_epi32(tot16);
    for (; v < V; v++) {
        f[v] = 1 + (int32_t)floor((double)ev[v] * scale);
        total += f[v];
    }
    f[first] += (int32_t)(((int64_t)1 << precision) - total);
}
/* s outside 1..52 (never with real weights) takes the plain body */
T_AVX512 static void freqs_avx512(FREQS_ARGS) {
    if (!(s > 0 && s <= 52) || V < 16) { freqs_body(FREQS_CALL); return; }
    const __m512d half = _mm512_set1_pd(pow2d(s - 1)), inv = _mm512_set1_pd(pow2d(-s));
    const __m512d lo = _mm512_set1_pd(-Z_CLAMP), hi = _mm512_set1_pd(Z_CLAMP);
    const int rd = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    __m512i top16 = _mm512_set1_epi32(INT32_MIN);
    int v = 0;
    for (; v + 16 <= V; v += 16) {       /* l = clamp(floor((a mult + 2^(s-1)) 2^-s)), exact */
        __m512i a16 = _mm512_loadu_si512((const void *)(a + v));
        __m512d x0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(a16));
        __m512d x1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(a16, 1));
        x0 = _mm512_fmadd_pd(x0, _mm512_cvtepi64_pd(_mm512_loadu_si512((const void *)(mult + v))), half);
        x1 = _mm512_fmadd_pd(x1, _mm512_cvtepi64_pd(_mm512_loadu_si512((const void *)(mult + v + 8))), half);
        x0 = _mm512_min_pd(_mm512_max_pd(_mm512_roundscale_pd(_mm512_mul_pd(x0, inv), rd), lo), hi);
        x1 = _mm512_min_pd(_mm512_max_pd(_mm512_roundscale_pd(_mm512_mul_pd(x1, inv), rd), lo), hi);
        __m512i l16 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtpd_epi32(x0)),
                                         _mm512_cvtpd_epi32(x1), 1);
        _mm512_storeu_si512((void *)(l + v), l16);
        top16 = _mm512_max_epi32(top16, l16);
    }
    int32_t top = _mm512_reduce_max_epi32(top16);
    for (; v < V; v++) {
        double x = floor(((double)a[v] * (double)mult[v] + pow2d(s - 1)) * pow2d(-s));
        x = x < -Z_CLAMP ? -Z_CLAMP : x > Z_CLAMP ? Z_CLAMP : x;
        l[v] = (int32_t)x;
        top = l[v] > top ? l[v] : top;
    }
    table_avx512(V, l, top, exp32, precision, ev, f);
}
#endif

typedef struct {
    int V, shift, precision, level;
    const int32_t *acc; const int64_t *mult; const int32_t *e, *exp32;
    int32_t *freqs;
} freqs_ctx;
static int freqs_item(void *ctx, int64_t i) {
    const freqs_ctx *c = ctx;
    const int V = c->V, s = c->shift - c->e[i];
    int32_t *l = malloc(sizeof(int32_t) * V);
    int32_t *ev = malloc(sizeof(int32_t) * V);
    if (!l || !ev) { free(l); free(ev); return 1; }
    const int32_t *a = c->acc + i * V;
    int32_t *f = c->freqs + i * V;
#ifdef HAVE_LEVELS
    if (c->level >= 2) freqs_avx512(V, a, c->mult, s, c->exp32, c->precision, l, ev, f);
    else if (c->level == 1) freqs_avx2(V, a, c->mult, s, c->exp32, c->precision, l, ev, f);
    else
#endif
        freqs_portable(V, a, c->mult, s, c->exp32, c->precision, l, ev, f);
    free(l); free(ev);
    return 0;
}

EXPORT int llmzip_ex_freqs(int M, int V, const int32_t *acc, const int64_t *mult, int shift,
                           const int32_t *e, const int32_t *exp32, int precision,
                           int32_t *freqs, int level, int threads) {
    freqs_ctx c = {.V = V, .shift = shift, .precision = precision, .level = level, .acc = acc,
                   .mult = mult, .e = e, .exp32 = exp32, .freqs = freqs};
    return parallel_for(M, threads, freqs_item, &c) ? 2 : 0;
}

/* Logits only, the first half of llmzip_ex_freqs: out (M, V) int32 Q10 bits, clamped. */
typedef struct {
    int V, shift;
    const int32_t *acc; const int64_t *mult; const int32_t *e;
    int32_t *out;
} logits_ctx;
static int logits_item(void *ctx, int64_t i) {
    const logits_ctx *c = ctx;
    logits_body(c->V, c->acc + i * c->V, c->mult, c->shift - c->e[i], c->out + i * c->V);
    return 0;
}

EXPORT int llmzip_ex_logits(int M, int V, const int32_t *acc, const int64_t *mult, int shift,
                            const int32_t *e, int32_t *out, int threads) {
    logits_ctx c = {.V = V, .shift = shift, .acc = acc, .mult = mult, .e = e, .out = out};
    return parallel_for(M, threads, logits_item, &c) ? 2 : 0;
}

/* The second half: tables from logits (M, V) plus, when bias is not NULL, the bias row
 * bias + i * bias_stride (a stride of 0 gives every row the same bias), each sum clamped
 * to +-2^30 again, exactly as llmzip_ex_freqs turns its logits into tables. Used by the
 * adaptive models (llmzip/codec/adapt.py). */
typedef struct {
    int V, precision, level;
    const int32_t *logits, *bias; int64_t bias_stride; const int32_t *exp32;
    int32_t *freqs;
} table_ctx;
static int table_item(void *ctx, int64_t i) {
    const table_ctx *c = ctx;
    const int V = c->V;
    int32_t *l = malloc(sizeof(int32_t) * V);
    int32_t *ev = malloc(sizeof(int32_t) * V);
    if (!l || !ev) { free(l); free(ev); return 1; }
    const int32_t *li = c->logits + i * V;
    const int32_t *b = c->bias ? c->bias + i * c->bias_stride : NULL;
    int32_t top = INT32_MIN;
    for (int v = 0; v < V; v++) {
        int64_t x = (int64_t)li[v] + (b ? b[v] : 0);
        l[v] = (int32_t)(x < -(1 << 30) ? -(1 << 30) : x > (1 << 30) ? (1 << 30) : x);
        top = l[v] > top ? l[v] : top;
    }
    int32_t *f = c->freqs + i * V;
#ifdef HAVE_LEVELS
    if (c->level >= 2) table_avx512(V, l, top, c->exp32, c->precision, ev, f);
    else if (c->level == 1) table_avx2(V, l, top, c->exp32, c->precision, ev, f);
    else
#endif
        table_portable(V, l, top, c->exp32, c->precision, ev, f);
    free(l); free(ev);
    return 0;
}

EXPORT int llmzip_ex_table(int M, int V, const int32_t *logits, const int32_t *bias,
                           int64_t bias_stride, const int32_t *exp32, int precision,
                           int32_t *freqs, int level, int threads) {
    table_ctx c = {.V = V, .precision = precision, .level = level, .logits = logits,
                   .bias = bias, .bias_stride = bias_stride, .exp32 = exp32, .freqs = freqs};
    return parallel_for(M, threads, table_item, &c) ? 2 : 0;
}
