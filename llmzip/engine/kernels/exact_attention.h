/* exact_attention.h -- the building blocks of the exact engine's softmaxes, shared by
 * attention (exact_attention.c, exact_attention_split.c) and the output layer's frequency
 * tables (exact_tables.c): dot products with the key tiles, scores, 2^-x weights,
 * probabilities and the weighted sums of values, in plain C, AVX2 and AVX-512.
 *
 * Exact like everything here (docs/engine.md): float64 only ever holds integers (times
 * powers of two) below 2^53, so any vector width and any order of summation give the
 * reference's integers.
 */
#ifndef LLMZIP_EXACT_ATTENTION_H
#define LLMZIP_EXACT_ATTENTION_H
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

/* (A[2i], A[2i+1]) as one int32, the pair a dword broadcast spreads */
INLINE int32_t pair_at(const int16_t *q, int i) { int32_t v; memcpy(&v, q + i, 4); return v; }

/* one tile of 16 positions for GG heads; named accumulators (an array of vectors gets
   spilled to the stack by gcc 12). ACC(acc, k, pair) adds one pair's products. */
#define DOTS_GG(GG, NAME, TARGET, ACC)                                                     \
TARGET static inline void dots##GG##_##NAME(int D, const int16_t *q, const int8_t *kt,     \
                                            int t0, int t1, int32_t *dot, int stride) {    \
    for (int t = t0; t < t1; t++) {                                                        \
        const int8_t *tile = kt + (int64_t)t * KT * D;                                     \
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;                    \
        for (int dp = 0; dp < D / 2; dp++) {                                               \
            __m512i k = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(tile + dp * 2 * KT))); \
            a0 = ACC(a0, k, pair_at(q, 2 * dp));                                           \
            if (GG > 1) a1 = ACC(a1, k, pair_at(q, D + 2 * dp));                           \
            if (GG > 2) a2 = ACC(a2, k, pair_at(q, 2 * D + 2 * dp));                       \
            if (GG > 3) a3 = ACC(a3, k, pair_at(q, 3 * D + 2 * dp));                       \
        }                                                                                  \
        int32_t *o = dot + (int64_t)(t - t0) * KT;                                         \
        _mm512_storeu_si512(o, a0);                                                        \
        if (GG > 1) _mm512_storeu_si512(o + stride, a1);                                   \
        if (GG > 2) _mm512_storeu_si512(o + 2 * (int64_t)stride, a2);                      \
        if (GG > 3) _mm512_storeu_si512(o + 3 * (int64_t)stride, a3);                      \
    }                                                                                      \
}
/* AVX-512 (level 2): vpmaddwd, then vpaddd */
#define ACC_MADD(a, k, pr) _mm512_add_epi32(a, _mm512_madd_epi16(k, _mm512_set1_epi32(pr)))
DOTS_GG(1, avx512, T_AVX512, ACC_MADD)
DOTS_GG(2, avx512, T_AVX512, ACC_MADD)
DOTS_GG(3, avx512, T_AVX512, ACC_MADD)
DOTS_GG(4, avx512, T_AVX512, ACC_MADD)

/* AVX-512 VNNI (level 3): vpdpwssd adds the pair products straight into the sums, and its
 * dword broadcast is folded into the instruction (one instruction per head and pair
 * instead of three) */
#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")))
#define ACC_VNNI(a, k, pr) _mm512_dpwssd_epi32(a, k, _mm512_set1_epi32(pr))
DOTS_GG(1, vnni, T_VNNI, ACC_VNNI)
DOTS_GG(2, vnni, T_VNNI, ACC_VNNI)
DOTS_GG(3, vnni, T_VNNI, ACC_VNNI)
DOTS_GG(4, vnni, T_VNNI, ACC_VNNI)

T_AVX512 static inline void dots_avx512(int G, int D, const int16_t *q, const int8_t *kt, int t0,
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

T_AVX2 static inline void dots_avx2(int G, int D, const int16_t *q, const int8_t *kt, int t0,
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
T_AVX512 static inline void values##GG##_avx512(int D, int n, const int32_t *p, const double *vsd, \
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
T_AVX512 static inline int nonzero_positions(int g, int n, const int32_t *p, int32_t *idx) {
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

T_AVX512 static inline void values_avx512(int G, int D, int n, const int32_t *p, const double *vsd,
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

/* AVX-512 VNNI (level 3): the same weighted sums in integers, four positions to an
 * instruction, as exact_attention_amx.c computes them on tiles. w = p vs < 2^40 is split
 * into L unsigned bytes and acc[h][d] += sum_l 2^(8l) sum_j w_l[h][j] v[j][d]: vpdpbusd
 * adds four byte products (w_l of four positions, unsigned; their values, signed) into
 * each int32 lane, and a lane's sum holds at most 65,536 products of at most 255 x 128
 * in magnitude: below 2^31, exact.
 *   - The positions where some head's p is not 0 are compacted with their p and vs
 *     (registers compressed, stored whole: 16 ints of slack take the lanes past the
 *     count), then taken in blocks of vnni_block(D) (the block's transposed values stay
 *     in the CPU's cache); L is the block's own: as many bytes as its largest p times its
 *     largest vs needs (1 to 5; positions far from the heads' peaks have small p).
 *   - w's bytes: wb[(h L + l) B + t] for the block's positions t (16 at a time).
 *   - The block's positions go in groups of four; a group's four value rows are
 *     transposed once (eight unpacks per 64 dimensions): in each block of 64 dimensions,
 *     dword lane 4i + r of vector k then holds dimension 16i + 4k + r of the four.
 *   - Four (head, byte) rows times 64 dimensions at a time: sixteen accumulators, each
 *     w dword broadcast once for four vectors; then added, shifted, into int64 sums.
 * The int64 sums (< 2^47) are added to acc exactly. Returns 1 where it cannot run (over
 * 65,536 positions, D not a multiple of 64, no scratch, switched off): the caller then
 * uses values_avx512, which gives the same integers. */
#define VNNI_MAX_POS 65536
extern int g_vnni_values;           /* 0: level 3 sums in float64 as level 2 (benchmarks) */
static inline int vnni_block(int D) { int b = 131072 / D / 16 * 16; return b < 256 ? 256 : b; }
#define VNNI_ACC4(r, b)                                                                    \
    do {                                                                                   \
        const __m512i bb = _mm512_set1_epi32(b);                                           \
        a##r##0 = _mm512_dpbusd_epi32(a##r##0, bb, u0);                                    \
        a##r##1 = _mm512_dpbusd_epi32(a##r##1, bb, u1);                                    \
        a##r##2 = _mm512_dpbusd_epi32(a##r##2, bb, u2);                                    \
        a##r##3 = _mm512_dpbusd_epi32(a##r##3, bb, u3);                                    \
    } while (0)
#define VNNI_FLUSH(r, k)                                                                   \
    do {                                                                                   \
        if (q + r < G * L) {           /* sum[h][c][k][lane] += a << 8l (lane order) */    \
            const int h = (q + r) / L, l = (q + r) % L;                                    \
            int64_t *o = sum + (int64_t)h * D + 64 * c + 16 * k;                           \
            const __m512i lo = _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(a##r##k)), 8 * l); \
            const __m512i hi = _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(a##r##k, 1)), 8 * l); \
            _mm512_storeu_si512((void *)o, _mm512_add_epi64(_mm512_loadu_si512((const void *)o), lo)); \
            _mm512_storeu_si512((void *)(o + 8), _mm512_add_epi64(_mm512_loadu_si512((const void *)(o + 8)), hi)); \
        }                                                                                  \
    } while (0)

/* One block: the m (<= B) compacted positions idx, their p rows pc (stride ps) and vs
 * sg; sum (G x D int64, lane order) += their weighted values. wb, vt: scratch. */
T_VNNI static inline void values_vnni_block(int G, int D, int m, const int32_t *idx,
                                            const uint32_t *pc, int64_t ps,
                                            const uint32_t *sg, const int8_t *vc,
                                            const int8_t *zero, uint8_t *wb, int8_t *vt,
                                            int64_t *sum) {
    const int m16 = (m + 15) / 16 * 16, ng = (m + 3) / 4;
    __m512i pm = _mm512_setzero_si512(), sm = pm;
    for (int t = 0; t < m16; t += 16) {           /* (lanes past m are 0: compressed) */
        sm = _mm512_max_epu32(sm, _mm512_loadu_si512((const void *)(sg + t)));
        for (int h = 0; h < G; h++)
            pm = _mm512_max_epu32(pm, _mm512_loadu_si512((const void *)(pc + h * ps + t)));
    }
    const uint64_t wmax = (uint64_t)_mm512_reduce_max_epu32(pm)
                          * (uint64_t)_mm512_reduce_max_epu32(sm);
    if (wmax == 0) return;
    const int L = (bit_length(wmax) + 7) / 8;            /* 1 .. 5 */
    const int np = (G * L + 3) / 4 * 4;                   /* (head, byte) rows, padded */
    memset(wb + (size_t)G * L * m16, 0, (size_t)(np - G * L) * m16);
    /* wb[(h L + l) m16 + t] = byte l of pc[h][t] sg[t] (0 from m on) */
    for (int t = 0; t < m16; t += 16) {
        const __mmask16 in = m - t >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (m - t)) - 1);
        const __m512i sv = _mm512_maskz_loadu_epi32(in, sg + t);
        const __m512i s0 = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(sv));
        const __m512i s1 = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(sv, 1));
        for (int h = 0; h < G; h++) {
            const __m512i x = _mm512_maskz_loadu_epi32(in, pc + h * ps + t);
            const __m512i w0 = _mm512_mul_epu32(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(x)), s0);
            const __m512i w1 = _mm512_mul_epu32(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(x, 1)), s1);
            for (int l = 0; l < L; l++)
                _mm_storeu_si128((__m128i *)(wb + (size_t)(h * L + l) * m16 + t),
                                 _mm_unpacklo_epi64(_mm512_cvtepi64_epi8(_mm512_srli_epi64(w0, 8 * l)),
                                                    _mm512_cvtepi64_epi8(_mm512_srli_epi64(w1, 8 * l))));
        }
    }
    /* vt[((c ng) + g) 4 + k]: vector k of 64-dimension block c of group g */
    for (int g = 0; g < ng; g++) {
        const int8_t *r0 = vc + (int64_t)idx[4 * g] * D;
        const int8_t *r1 = 4 * g + 1 < m ? vc + (int64_t)idx[4 * g + 1] * D : zero;
        const int8_t *r2 = 4 * g + 2 < m ? vc + (int64_t)idx[4 * g + 2] * D : zero;
        const int8_t *r3 = 4 * g + 3 < m ? vc + (int64_t)idx[4 * g + 3] * D : zero;
        for (int c = 0; c < D / 64; c++) {
            const __m512i a = _mm512_loadu_si512((const void *)(r0 + 64 * c));
            const __m512i b = _mm512_loadu_si512((const void *)(r1 + 64 * c));
            const __m512i x = _mm512_loadu_si512((const void *)(r2 + 64 * c));
            const __m512i y = _mm512_loadu_si512((const void *)(r3 + 64 * c));
            const __m512i t0 = _mm512_unpacklo_epi8(a, b), t1 = _mm512_unpackhi_epi8(a, b);
            const __m512i t2 = _mm512_unpacklo_epi8(x, y), t3 = _mm512_unpackhi_epi8(x, y);
            int8_t *o = vt + ((int64_t)c * ng + g) * 256;
            _mm512_storeu_si512((void *)o, _mm512_unpacklo_epi16(t0, t2));
            _mm512_storeu_si512((void *)(o + 64), _mm512_unpackhi_epi16(t0, t2));
            _mm512_storeu_si512((void *)(o + 128), _mm512_unpacklo_epi16(t1, t3));
            _mm512_storeu_si512((void *)(o + 192), _mm512_unpackhi_epi16(t1, t3));
        }
    }
    for (int c = 0; c < D / 64; c++)
        for (int q = 0; q < np; q += 4) {                 /* rows q .. q + 3 */
            const uint8_t *w0 = wb + (size_t)q * m16, *w1 = w0 + m16, *w2 = w1 + m16,
                          *w3 = w2 + m16;
            __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;
            __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            __m512i a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            const int8_t *src = vt + (int64_t)c * ng * 256;
            for (int g = 0; g < ng; g++) {
                const int8_t *v = src + (int64_t)g * 256;
                const __m512i u0 = _mm512_loadu_si512((const void *)v);
                const __m512i u1 = _mm512_loadu_si512((const void *)(v + 64));
                const __m512i u2 = _mm512_loadu_si512((const void *)(v + 128));
                const __m512i u3 = _mm512_loadu_si512((const void *)(v + 192));
                int32_t b0, b1, b2, b3;
                memcpy(&b0, w0 + 4 * g, 4);
                memcpy(&b1, w1 + 4 * g, 4);
                memcpy(&b2, w2 + 4 * g, 4);
                memcpy(&b3, w3 + 4 * g, 4);
                VNNI_ACC4(0, b0);
                VNNI_ACC4(1, b1);
                VNNI_ACC4(2, b2);
                VNNI_ACC4(3, b3);
            }
            VNNI_FLUSH(0, 0); VNNI_FLUSH(0, 1); VNNI_FLUSH(0, 2); VNNI_FLUSH(0, 3);
            VNNI_FLUSH(1, 0); VNNI_FLUSH(1, 1); VNNI_FLUSH(1, 2); VNNI_FLUSH(1, 3);
            VNNI_FLUSH(2, 0); VNNI_FLUSH(2, 1); VNNI_FLUSH(2, 2); VNNI_FLUSH(2, 3);
            VNNI_FLUSH(3, 0); VNNI_FLUSH(3, 1); VNNI_FLUSH(3, 2); VNNI_FLUSH(3, 3);
        }
}

T_VNNI static inline int values_vnni(int G, int D, int n, const int32_t *p,
                                     const double *vsd, const int8_t *vc, double *acc) {
    if (!g_vnni_values || n > VNNI_MAX_POS || D % 64 || G > MAXG) return 1;
    const int n16 = (n + 15) / 16 * 16, B = vnni_block(D);
    const int64_t ps = n16 + 16;                          /* a compacted row's stride */
    int32_t *idx = pool_scratch(SCR_VNNI_I, sizeof(int32_t) * ((size_t)G + 2) * (size_t)ps);
    uint8_t *wb = pool_scratch(SCR_VNNI_W, (size_t)(5 * MAXG + 4) * B + (size_t)D);
    int8_t *vt = pool_scratch(SCR_VNNI_V, (size_t)B * D);
    int64_t *sum = pool_scratch(SCR_VNNI_S, sizeof(int64_t) * (size_t)G * D);
    if (!idx || !wb || !vt || !sum) return 1;
    uint32_t *sg = (uint32_t *)idx + ps, *pc = sg + ps;
    int8_t *zero = (int8_t *)(wb + (size_t)(5 * MAXG + 4) * B);   /* rows: G L <= 40 */
    memset(zero, 0, (size_t)D);
    /* compact the positions where some head's p is not 0 */
    int m = 0;
    const __m512i step = _mm512_set1_epi32(16);
    __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int j = 0; j < n; j += 16, pos = _mm512_add_epi32(pos, step)) {
        const __mmask16 in = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        __m512i any = _mm512_setzero_si512();
        for (int h = 0; h < G; h++)
            any = _mm512_or_si512(any, _mm512_maskz_loadu_epi32(in, p + (int64_t)h * n + j));
        const __mmask16 k = _mm512_test_epi32_mask(any, any);
        if (!k) continue;
        const __m512i sv = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm512_cvttpd_epu32(_mm512_maskz_loadu_pd((__mmask8)in, vsd + j))),
            _mm512_cvttpd_epu32(_mm512_maskz_loadu_pd((__mmask8)(in >> 8), vsd + j + 8)), 1);
        _mm512_storeu_si512((void *)(sg + m), _mm512_maskz_compress_epi32(k, sv));
        _mm512_storeu_si512((void *)(idx + m), _mm512_maskz_compress_epi32(k, pos));
        for (int h = 0; h < G; h++)
            _mm512_storeu_si512((void *)(pc + h * ps + m), _mm512_maskz_compress_epi32(
                k, _mm512_maskz_loadu_epi32(in, p + (int64_t)h * n + j)));
        m += __builtin_popcount(k);
    }
    if (m == 0) return 0;
    for (int t = m; t < (m + 15) / 16 * 16; t++) {        /* the last block's tail: 0 */
        sg[t] = 0;
        for (int h = 0; h < G; h++) pc[h * ps + t] = 0;
    }
    for (int64_t x = 0; x < (int64_t)G * D; x++) sum[x] = 0;
    for (int t0 = 0; t0 < m; t0 += B)
        values_vnni_block(G, D, m - t0 < B ? m - t0 : B, idx + t0, pc + t0, ps, sg + t0, vc,
                          zero, wb, vt, sum);
    for (int h = 0; h < G; h++)                  /* lane 16k + 4i + r: dimension 16i + 4k + r */
        for (int c = 0; c < D / 64; c++) {
            const int64_t *sb = sum + (int64_t)h * D + 64 * c;
            double *ab = acc + (int64_t)h * D + 64 * c;
            for (int x = 0; x < 64; x++)
                ab[16 * ((x >> 2) & 3) + 4 * (x >> 4) + (x & 3)] += (double)sb[x];
        }
    return 0;
}

/* AVX-512: p_j = floor(e_j * R 2^-sh) as int32 (e R < 2^52: exact) */
T_AVX512 static inline void probs_avx512(const int32_t *e, double scale, int n, int32_t *p) {
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
T_AVX512 static inline int32_t scores_avx512(const int32_t *dot, const double *ksd, double c, int n,
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
T_AVX512 static inline int64_t weights_avx512(const int32_t *z, int32_t zmax, int n,
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

T_AVX2 static inline void values_avx2(int G, int D, int n, const double *w, const int8_t *vc,
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

/* one call of llmzip_ex_attention */
typedef struct {
    int H, K, D, Smax, window, level;
    const int16_t *q16; const int32_t *eq, *row_b, *row_pos;
    const int8_t *kt; const double *ksd; const int8_t *vc; const double *vsd;
    const int32_t *exp32; int64_t *y;
} attention_ctx;

/* exact_attention_split.c: few (row, kv head) pairs over many positions */
int attention_split_wanted(int M, int K, int longest, int threads);
int attention_split(const attention_ctx *c, int M, int threads);

#endif
