/* The exact engine's elementwise and normalisation kernels, RoPE and the KV cache's
 * writes (exact_attention.c holds attention and the frequency tables).
 *
 * Every function here computes exactly what llmzip/engine/exact/reference.py computes
 * (docs/engine.md is the spec): integer arithmetic only (int64, plus float64 used as an
 * exact integer accumulator where every value and partial sum is an integer below 2^53),
 * so the result does not depend on the compiler, the SIMD width, the thread count or how
 * rows are batched. Rows are independent; threads split rows (or (row, head) pairs): each
 * kernel's loop body is a function of (context, row) run by parallel_for (pool.c).
 *
 * Conventions: rsr(v, s) = floor((v + 2^(s-1)) / 2^s) for s > 0, v * 2^-s for s <= 0;
 * ">>" on negative int64 is an arithmetic shift (every compiler this builds with), and
 * the library is built with -fwrapv: int64 arithmetic wraps like torch's (the spec's
 * bounds keep a working model far from it; the rule only makes every result defined).
 */
#include "exact_common.h"
#include "amx.h"

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
/* Row functions are INLINE and written without branches in their loops, so that each
 * SIMD level (LEVEL_VARIANTS) vectorises them; `level` picks one (the integers are the
 * same at every level). */
INLINE int64_t max_abs(const int64_t *y, int K) {
    int64_t m = 0;
    for (int k = 0; k < K; k++) { int64_t v = y[k] < 0 ? -y[k] : y[k]; m = v > m ? v : m; }
    return m;
}

INLINE void quant_row(const int64_t *y, int K, int64_t levels, int16_t *a, int32_t *e) {
    int s = pow2_exponent(max_abs(y, K), levels);
    rsr_t P = rsr_parts(s);
    for (int k = 0; k < K; k++) a[k] = (int16_t)RSR(y[k], P);
    *e = s;
}
LEVEL_VARIANTS(quant_row, (const int64_t *y, int K, int64_t levels, int16_t *a, int32_t *e),
               (y, K, levels, a, e))

typedef struct { int K; const int64_t *y; int64_t levels; int16_t *a; int32_t *e; int level; } quant_ctx;
static int quant_item(void *p, int64_t i) {
    const quant_ctx *c = p;
    AT_LEVEL(c->level, quant_row, (c->y + i * c->K, c->K, c->levels, c->a + i * c->K, c->e + i));
    return 0;
}

EXPORT int llmzip_ex_quant(int M, int K, const int64_t *y, int64_t levels, int16_t *a, int32_t *e,
                           int level, int threads) {
    quant_ctx c = {.K = K, .y = y, .levels = levels, .a = a, .e = e, .level = level};
    parallel_for(M, threads, quant_item, &c);
    return 0;
}

/* ---- RMSNorm: x / rms(x) * gain, into Q(out_frac) ------------------------------- */
/* floor(rsr(x, s) * Q / r): |rsr(x, s)| < 2^20 and Q = isqrt(C << 42) < 2^28 for C < 2^14,
 * so the quotient is below 2^48 and floor_div_inv is exact */
/* the row's shift to at most 2^20 (P) and r = max(1, isqrt(sum rsr(x, s)^2 << 10)) */
INLINE int64_t rms_of(const int64_t *x, int C, rsr_t *P) {
    *P = rsr_parts(pow2_exponent(max_abs(x, C), (1 << 20) - 1));
    int64_t ss = 0;
    for (int k = 0; k < C; k++) { int64_t v = RSR(x[k], *P); ss += v * v; }
    int64_t r = isqrt64(ss << 10);
    return r < 1 ? 1 : r;
}

INLINE void rmsnorm_row(const int64_t *x, int C, const int64_t *gain, int out_frac,
                        int64_t Q, int64_t *y) {
    rsr_t P, G = rsr_parts(32 - out_frac);
    const int64_t r = rms_of(x, C, &P);
    const double inv = 1.0 / (double)r;
    for (int k = 0; k < C; k++) {
        int64_t t = floor_div_inv(RSR(x[k], P) * Q, r, inv);
        y[k] = RSR(t * gain[k], G);
    }
}
#ifdef HAVE_LEVELS
/* floor_div_inv on 8 lanes (the same integers: a float64 quotient, one step each way) */
T_AVX512 static inline __m512i floor_div_inv8(__m512i a, __m512i b, __m512d inv) {
    __m512i q = _mm512_cvttpd_epi64(_mm512_roundscale_pd(
        _mm512_mul_pd(_mm512_cvtepi64_pd(a), inv), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
    q = _mm512_mask_sub_epi64(q, _mm512_cmpgt_epi64_mask(_mm512_mullo_epi64(q, b), a), q,
                              _mm512_set1_epi64(1));
    __m512i q1 = _mm512_add_epi64(q, _mm512_set1_epi64(1));
    return _mm512_mask_mov_epi64(q, _mm512_cmple_epi64_mask(_mm512_mullo_epi64(q1, b), a), q1);
}

T_AVX512 static __m512i rsr8(__m512i v, rsr_t P) {
    return _mm512_srai_epi64(_mm512_add_epi64(_mm512_mullo_epi64(v, _mm512_set1_epi64(P.mul)),
                                              _mm512_set1_epi64(P.rnd)), P.sh);
}

T_AVX2 static void rmsnorm_row_l1(const int64_t *x, int C, const int64_t *gain, int out_frac,
                                  int64_t Q, int64_t *y) {
    rmsnorm_row(x, C, gain, out_frac, Q, y);
}

T_AVX512 static void rmsnorm_row_l2(const int64_t *x, int C, const int64_t *gain, int out_frac,
                                    int64_t Q, int64_t *y) {
    rsr_t P, G = rsr_parts(32 - out_frac);
    const int64_t r = rms_of(x, C, &P);
    const double inv = 1.0 / (double)r;
    const __m512i vQ = _mm512_set1_epi64(Q), vr = _mm512_set1_epi64(r);
    const __m512d vinv = _mm512_set1_pd(inv);
    int k = 0;
    for (; k + 8 <= C; k += 8) {
        __m512i num = _mm512_mullo_epi64(rsr8(_mm512_loadu_si512((const void *)(x + k)), P), vQ);
        __m512i t = floor_div_inv8(num, vr, vinv);
        _mm512_storeu_si512((void *)(y + k),
                            rsr8(_mm512_mullo_epi64(t, _mm512_loadu_si512((const void *)(gain + k))), G));
    }
    for (; k < C; k++) y[k] = RSR(floor_div_inv(RSR(x[k], P) * Q, r, inv) * gain[k], G);
}
#endif

/* rmsnorm and norm_quant: RMSNorm of rows of x (then quantised to a, e) */
typedef struct {
    int C, out_frac, level;
    const int64_t *x, *gain;
    int64_t Q, levels;
    int64_t *y;                     /* rmsnorm's output */
    int16_t *a; int32_t *e;         /* norm_quant's */
} norm_ctx;

static int rmsnorm_item(void *p, int64_t i) {
    const norm_ctx *c = p;
    AT_LEVEL(c->level, rmsnorm_row, (c->x + i * c->C, c->C, c->gain, c->out_frac, c->Q,
                                     c->y + i * c->C));
    return 0;
}

/* x (M, C) int64 -> y (M, C) int64; Q = isqrt(C << 42) */
EXPORT int llmzip_ex_rmsnorm(int M, int C, const int64_t *x, const int64_t *gain, int out_frac,
                             int64_t Q, int64_t *y, int level, int threads) {
    norm_ctx c = {.C = C, .out_frac = out_frac, .level = level, .x = x, .gain = gain, .Q = Q,
                  .y = y};
    parallel_for(M, threads, rmsnorm_item, &c);
    return 0;
}

static int norm_quant_item(void *p, int64_t i) {
    const norm_ctx *c = p;
    int64_t *tmp = malloc(sizeof(int64_t) * c->C);
    if (!tmp) return 1;
    AT_LEVEL(c->level, rmsnorm_row, (c->x + i * c->C, c->C, c->gain, c->out_frac, c->Q, tmp));
    AT_LEVEL(c->level, quant_row, (tmp, c->C, c->levels, c->a + i * c->C, c->e + i));
    free(tmp);
    return 0;
}

/* RMSNorm then quantise for the next matmul: x (M, C) -> a (M, C) int16, e (M) */
EXPORT int llmzip_ex_norm_quant(int M, int C, const int64_t *x, const int64_t *gain, int out_frac,
                                int64_t Q, int64_t levels, int16_t *a, int32_t *e, int level,
                                int threads) {
    norm_ctx c = {.C = C, .out_frac = out_frac, .level = level, .x = x, .gain = gain, .Q = Q,
                  .levels = levels, .a = a, .e = e};
    return parallel_for(M, threads, norm_quant_item, &c) ? 2 : 0;
}

/* ---- requantise matmul outputs -------------------------------------------------- */
INLINE void requant_row(const int32_t *a, const int64_t *mult, int s, int N, int add,
                        int64_t *o) {
    rsr_t P = rsr_parts(s);
    if (add) for (int n = 0; n < N; n++) o[n] += RSR((int64_t)a[n] * mult[n], P);
    else     for (int n = 0; n < N; n++) o[n] = RSR((int64_t)a[n] * mult[n], P);
}
LEVEL_VARIANTS(requant_row, (const int32_t *a, const int64_t *mult, int s, int N, int add,
                             int64_t *o), (a, mult, s, N, add, o))

typedef struct {
    int N, shift, add, level;
    const int32_t *acc; const int64_t *mult; const int32_t *e;
    int64_t *out;
} requant_ctx;
static int requant_item(void *p, int64_t i) {
    const requant_ctx *c = p;
    AT_LEVEL(c->level, requant_row, (c->acc + i * c->N, c->mult, c->shift - c->e[i], c->N,
                                     c->add, c->out + i * c->N));
    return 0;
}

/* out[i][n] (+)= rsr(acc[i][n] * mult[n], shift - e[i]) */
EXPORT int llmzip_ex_requant(int M, int N, const int32_t *acc, const int64_t *mult, int shift,
                             const int32_t *e, int64_t *out, int add, int level, int threads) {
    requant_ctx c = {.N = N, .shift = shift, .add = add, .level = level, .acc = acc,
                     .mult = mult, .e = e, .out = out};
    parallel_for(M, threads, requant_item, &c);
    return 0;
}

/* ---- gated MLP: act(gate) * up, then quantised for the down projection ----------- */
/* act(x) by linear interpolation between knots 2^(frac-6) apart on [-16, 16) (Q16 table of
 * 2 * 16 * 64 + 1 knots); act(x) = x above, the table's first knot below. Branch-free: the
 * index is clamped for the lookups, the result selected after. */
INLINE int64_t lut_act(const int64_t *tab, int64_t x, int frac, int64_t tail) {
    const int64_t n = 16 << 6;
    const int step = frac - 6;
    int64_t i = x >> step, f = x & (((int64_t)1 << step) - 1);
    int64_t ic = i < -n ? -n : i >= n ? n - 1 : i;
    int64_t lo = tab[ic + n], hi = tab[ic + n + 1];
    int64_t v = (lo * ((int64_t)1 << step) + (hi - lo) * f + 512) >> 10;
    return i >= n ? x : i < -n ? tail : v;
}

INLINE void glu_row(const int32_t *r, int F, const int64_t *mult, int s, const int64_t *tab,
                    int frac, int64_t levels, int64_t *z, int16_t *a, int32_t *ea) {
    rsr_t P = rsr_parts(s), Z = rsr_parts(frac);
    const int64_t tail = rsr(tab[0], 16 - frac);
    for (int n = 0; n < F; n++) {
        int64_t g = RSR((int64_t)r[n] * mult[n], P);
        int64_t u = RSR((int64_t)r[F + n] * mult[F + n], P);
        z[n] = RSR(lut_act(tab, g, frac, tail) * u, Z);
    }
    quant_row(z, F, levels, a, ea);
}
#ifdef HAVE_LEVELS
T_AVX2 static void glu_row_l1(const int32_t *r, int F, const int64_t *mult, int s,
                              const int64_t *tab, int frac, int64_t levels, int64_t *z,
                              int16_t *a, int32_t *ea) {
    glu_row(r, F, mult, s, tab, frac, levels, z, a, ea);
}

/* AVX-512, 8 lanes of int64 (GCC does not vectorise the table lookups itself) */

T_AVX512 static void glu_row_l2(const int32_t *r, int F, const int64_t *mult, int s,
                                const int64_t *tab, int frac, int64_t levels, int64_t *z,
                                int16_t *a, int32_t *ea) {
    rsr_t P = rsr_parts(s), Z = rsr_parts(frac);
    const int64_t n = 16 << 6;
    const int step = frac - 6;
    const __m512i tail = _mm512_set1_epi64(rsr(tab[0], 16 - frac));
    const __m512i vn = _mm512_set1_epi64(n), vlo = _mm512_set1_epi64(-n);
    const __m512i vhi = _mm512_set1_epi64(n - 1), fmask = _mm512_set1_epi64(((int64_t)1 << step) - 1);
    const __m512i half10 = _mm512_set1_epi64(512);
    int k = 0;
    for (; k + 8 <= F; k += 8) {
        __m512i g = rsr8(_mm512_mullo_epi64(_mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(r + k))),
                                            _mm512_loadu_si512((const void *)(mult + k))), P);
        __m512i u = rsr8(_mm512_mullo_epi64(_mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(r + F + k))),
                                            _mm512_loadu_si512((const void *)(mult + F + k))), P);
        __m512i i = _mm512_srai_epi64(g, step), f = _mm512_and_si512(g, fmask);
        __m512i ic = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(i, vlo), vhi), vn);
        __m512i lo = _mm512_i64gather_epi64(ic, (const void *)tab, 8);
        __m512i hi = _mm512_i64gather_epi64(ic, (const void *)(tab + 1), 8);
        __m512i v = _mm512_srai_epi64(_mm512_add_epi64(_mm512_add_epi64(
            _mm512_slli_epi64(lo, step), _mm512_mullo_epi64(_mm512_sub_epi64(hi, lo), f)), half10), 10);
        v = _mm512_mask_blend_epi64(_mm512_cmplt_epi64_mask(i, vlo), v, tail);
        v = _mm512_mask_blend_epi64(_mm512_cmpge_epi64_mask(i, vn), v, g);
        _mm512_storeu_si512((void *)(z + k), rsr8(_mm512_mullo_epi64(v, u), Z));
    }
    for (; k < F; k++) {
        int64_t g = RSR((int64_t)r[k] * mult[k], P), u = RSR((int64_t)r[F + k] * mult[F + k], P);
        z[k] = RSR(lut_act(tab, g, frac, rsr(tab[0], 16 - frac)) * u, Z);
    }
    quant_row(z, F, levels, a, ea);
}
#endif

typedef struct {
    int F, shift, frac, level;
    const int32_t *acc; const int64_t *mult; const int32_t *e; const int64_t *tab;
    int64_t levels;
    int16_t *a; int32_t *ea;
} glu_ctx;
static int glu_item(void *p, int64_t i) {
    const glu_ctx *c = p;
    int64_t *z = malloc(sizeof(int64_t) * c->F);
    if (!z) return 1;
    AT_LEVEL(c->level, glu_row, (c->acc + i * 2 * c->F, c->F, c->mult, c->shift - c->e[i],
                                 c->tab, c->frac, c->levels, z, c->a + i * c->F, c->ea + i));
    free(z);
    return 0;
}

/* acc (M, 2F): gate | up; mult (2F); z = rsr(act(gate) * up, frac), all in Q(frac) */
EXPORT int llmzip_ex_glu(int M, int F, const int32_t *acc, const int64_t *mult, int shift,
                         const int32_t *e, const int64_t *tab, int frac, int64_t levels,
                         int16_t *a, int32_t *ea, int level, int threads) {
    glu_ctx c = {.F = F, .shift = shift, .frac = frac, .level = level, .acc = acc, .mult = mult,
                 .e = e, .tab = tab, .levels = levels, .a = a, .ea = ea};
    return parallel_for(M, threads, glu_item, &c) ? 2 : 0;
}

/* ---- RoPE and the KV cache ------------------------------------------------------ */
/* rotate x (D) in place: adjacent pairs (halves = 0) or halves (halves = 1) */
INLINE void rope_vec(int64_t *x, int D, const int64_t *c, const int64_t *s, int halves) {
    int h = D / 2;
    for (int j = 0; j < h; j++) {
        int ia = halves ? j : 2 * j, ib = halves ? j + h : 2 * j + 1;
        int64_t a = x[ia], b = x[ib];
        x[ia] = rsr(a * c[j] - b * s[j], 15);
        x[ib] = rsr(a * s[j] + b * c[j], 15);
    }
}

INLINE void quant_kv(const int64_t *x, int D, int8_t *q, int64_t *sigma) {
    int64_t m = 0;
    for (int d = 0; d < D; d++) { int64_t v = iabs64(x[d]); if (v > m) m = v; }
    int64_t den = m > 0 ? m : 1;          /* round_div(127 x, den) = floor((254 x + den) / 2den) */
    const double inv = 1.0 / (double)(2 * den);
    for (int d = 0; d < D; d++) q[d] = (int8_t)floor_div_inv(254 * x[d] + den, 2 * den, inv);
    *sigma = m;
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

/* one row: rotate, clamp, quantise q; quantise k and v into the cache */
INLINE void qkv_row(int H, int K, int D, int64_t *r, int b, int pos, const int64_t *c,
                    const int64_t *s, int halves, int16_t *q16, int32_t *eq, int8_t *kt,
                    double *ksd, int8_t *vc, double *vsd, int Smax, int64_t A, int zshift,
                    int8_t *k8) {
    for (int h = 0; h < H + K; h++) rope_vec(r + (int64_t)h * D, D, c, s, halves);
    for (int64_t j = 0; j < (int64_t)(H + 2 * K) * D; j++)   /* attention's bound */
        r[j] = r[j] > ATT_CLAMP ? ATT_CLAMP : r[j] < -ATT_CLAMP ? -ATT_CLAMP : r[j];
    for (int h = 0; h < H; h++)
        quant_row(r + (int64_t)h * D, D, 32767, q16 + (int64_t)h * D, eq + h);
    for (int g = 0; g < K; g++) {
        int64_t base = ((int64_t)b * K + g) * Smax, slot = base + pos;
        int64_t sigma, km, ke, vs;
        quant_kv(r + (int64_t)(H + g) * D, D, k8, &sigma);
        for (int d = 0; d < D; d++) kt[ktile_index(base, pos, d, D)] = k8[d];
        key_multiplier(sigma, A, &km, &ke);
        ksd[slot] = (double)km * pow2d((int)ke - zshift);
        quant_kv(r + (int64_t)(H + K + g) * D, D, vc + slot * D, &vs);
        vsd[slot] = (double)vs;
    }
}
#define QKV_PARAMS (int H, int K, int D, int64_t *r, int b, int pos, const int64_t *c,         \
    const int64_t *s, int halves, int16_t *q16, int32_t *eq, int8_t *kt, double *ksd,          \
    int8_t *vc, double *vsd, int Smax, int64_t A, int zshift, int8_t *k8)
#define QKV_ARGS (H, K, D, r, b, pos, c, s, halves, q16, eq, kt, ksd, vc, vsd, Smax, A, zshift, k8)
LEVEL_VARIANTS(qkv_row, QKV_PARAMS, QKV_ARGS)

/* qkv (M, H + 2K, D) int64 in Q12 (after any per-head norm), row_b/row_pos per row:
 * q rotated and quantised per head (q16, eq); k rotated, quantised and written to the
 * tiled key cache kt with its multiplier ksd; v quantised into vc (B, K, Smax, D) with
 * its scale vsd. Smax is a multiple of 16. cos/sin (n_pos, D/2). A: the score constant,
 * zshift: reference.SCORE_SHIFT. */
typedef struct {
    int H, K, D, halves, Smax, zshift, level;
    int64_t *qkv; const int32_t *row_b, *row_pos; const int64_t *cos_t, *sin_t;
    int16_t *q16; int32_t *eq; int8_t *kt; double *ksd; int8_t *vc; double *vsd;
    int64_t A;
} qkv_ctx;
static int qkv_item(void *p, int64_t i) {
    const qkv_ctx *c = p;
    const int H = c->H, K = c->K, D = c->D, pos = c->row_pos[i];
    int8_t *k8 = malloc(D);
    if (!k8) return 1;
    AT_LEVEL(c->level, qkv_row, (H, K, D, c->qkv + i * (H + 2 * K) * D, c->row_b[i], pos,
                                 c->cos_t + (int64_t)pos * (D / 2),
                                 c->sin_t + (int64_t)pos * (D / 2), c->halves,
                                 c->q16 + i * H * D, c->eq + i * H, c->kt, c->ksd, c->vc,
                                 c->vsd, c->Smax, c->A, c->zshift, k8));
    free(k8);
    return 0;
}

EXPORT int llmzip_ex_qkv(int M, int H, int K, int D, int64_t *qkv, const int32_t *row_b,
                         const int32_t *row_pos, const int64_t *cos_t, const int64_t *sin_t,
                         int halves, int16_t *q16, int32_t *eq, int8_t *kt, double *ksd,
                         int8_t *vc, double *vsd, int Smax, int64_t A, int zshift,
                         int level, int threads) {
    qkv_ctx c = {.H = H, .K = K, .D = D, .halves = halves, .Smax = Smax, .zshift = zshift,
                 .level = level, .qkv = qkv, .row_b = row_b, .row_pos = row_pos,
                 .cos_t = cos_t, .sin_t = sin_t, .q16 = q16, .eq = eq, .kt = kt, .ksd = ksd,
                 .vc = vc, .vsd = vsd, .A = A};
    return parallel_for(M, threads, qkv_item, &c) ? 2 : 0;
}

typedef struct {
    int H, K, D, frac;
    int64_t *qkv; const int64_t *qg, *kg; int64_t Q;
} qk_norm_ctx;
static int qk_norm_item(void *p, int64_t i) {
    const qk_norm_ctx *c = p;
    const int H = c->H, K = c->K, D = c->D;
    int64_t *tmp = malloc(sizeof(int64_t) * D);
    if (!tmp) return 1;
    for (int h = 0; h < H + K; h++) {
        int64_t *v = c->qkv + (i * (H + 2 * K) + h) * D;
        rmsnorm_row(v, D, h < H ? c->qg : c->kg, c->frac, c->Q, tmp);
        memcpy(v, tmp, sizeof(int64_t) * D);
    }
    free(tmp);
    return 0;
}

/* per-head RMSNorm of q and k (Gemma), in place on qkv (M, H + 2K, D) */
EXPORT int llmzip_ex_qk_norm(int M, int H, int K, int D, int64_t *qkv, const int64_t *qg,
                      const int64_t *kg, int frac, int64_t Q, int threads) {
    qk_norm_ctx c = {.H = H, .K = K, .D = D, .frac = frac, .qkv = qkv, .qg = qg, .kg = kg,
                     .Q = Q};
    return parallel_for(M, threads, qk_norm_item, &c) ? 2 : 0;
}

/* The widest level this CPU runs (see "SIMD levels" above). */
EXPORT int llmzip_ex_max_level(void) {
#ifdef HAVE_LEVELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    {
        if (!__builtin_cpu_supports("avx512vnni")) return 2;
        /* 4: attention's matrix products on AMX tiles (exact_attention_amx.c) */
        return __builtin_cpu_supports("avx512vbmi") && gemm_i8_amx_usable() ? 4 : 3;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}
