/* The exact engine's output layer -> integer frequency tables (docs/engine.md): logits
 * from the head's int32 sums, their 2^-x weights and the tables the range coder codes
 * with; the same for logits plus the adaptive models' bias (llmzip/codec/adapt.py).
 */
#include "exact_attention.h"

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
/* AVX-512 logits (logits_body's): s outside 1..52 (never with real weights) takes the plain
 * body */
T_AVX512 static int32_t logits_avx512(int V, const int32_t *a, const int64_t *mult, int s,
                                      int32_t *l) {
    if (!(s > 0 && s <= 52) || V < 16) return logits_body(V, a, mult, s, l);
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
    return top;
}
T_AVX2 static int32_t logits_avx2(int V, const int32_t *a, const int64_t *mult, int s,
                                  int32_t *l) {
    return logits_body(V, a, mult, s, l);
}
T_AVX512 static void freqs_avx512(FREQS_ARGS) {
    const int32_t top = logits_avx512(V, a, mult, s, l);
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
    int32_t *l = pool_scratch(SCR_TABLE_L, sizeof(int32_t) * V);
    int32_t *ev = pool_scratch(SCR_TABLE_E, sizeof(int32_t) * V);
    if (!l || !ev) return 1;
    const int32_t *a = c->acc + i * V;
    int32_t *f = c->freqs + i * V;
#ifdef HAVE_LEVELS
    if (c->level >= 2) freqs_avx512(V, a, c->mult, s, c->exp32, c->precision, l, ev, f);
    else if (c->level == 1) freqs_avx2(V, a, c->mult, s, c->exp32, c->precision, l, ev, f);
    else
#endif
        freqs_portable(V, a, c->mult, s, c->exp32, c->precision, l, ev, f);
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
    int V, shift, level;
    const int32_t *acc; const int64_t *mult; const int32_t *e;
    int32_t *out;
} logits_ctx;
static int logits_item(void *ctx, int64_t i) {
    const logits_ctx *c = ctx;
    const int32_t *a = c->acc + i * c->V;
    const int s = c->shift - c->e[i];
#ifdef HAVE_LEVELS
    if (c->level >= 2) { logits_avx512(c->V, a, c->mult, s, c->out + i * c->V); return 0; }
    if (c->level == 1) { logits_avx2(c->V, a, c->mult, s, c->out + i * c->V); return 0; }
#endif
    logits_body(c->V, a, c->mult, s, c->out + i * c->V);
    return 0;
}

EXPORT int llmzip_ex_logits(int M, int V, const int32_t *acc, const int64_t *mult, int shift,
                            const int32_t *e, int32_t *out, int level, int threads) {
    logits_ctx c = {.V = V, .shift = shift, .level = level, .acc = acc, .mult = mult, .e = e,
                    .out = out};
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
    int32_t *l = pool_scratch(SCR_TABLE_L, sizeof(int32_t) * V);
    int32_t *ev = pool_scratch(SCR_TABLE_E, sizeof(int32_t) * V);
    if (!l || !ev) return 1;
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
    return 0;
}

EXPORT int llmzip_ex_table(int M, int V, const int32_t *logits, const int32_t *bias,
                           int64_t bias_stride, const int32_t *exp32, int precision,
                           int32_t *freqs, int level, int threads) {
    table_ctx c = {.V = V, .precision = precision, .level = level, .logits = logits,
                   .bias = bias, .bias_stride = bias_stride, .exp32 = exp32, .freqs = freqs};
    return parallel_for(M, threads, table_item, &c) ? 2 : 0;
}
