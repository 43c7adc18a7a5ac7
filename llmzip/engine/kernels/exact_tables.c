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

/* ---- the adaptive models' tables in one call (llmzip/codec/adapt.py) ----------------
 * What adapt.py's numpy path computes in five passes (the temperature, its edits by the
 * match and n-gram models, the bias, the table, the expectation for tau's gradient), in
 * three over the row and without the weights array: less memory traffic per coded token
 * for Gemma's 262,144 tokens (a row's logits come cold from the encoder's block).
 *   t_v = clamp((l_v tau) >> 16, +-2^30) (t = l when tau is 0); the edited entries take
 *   the given values instead (adapt.py computes them from t); x_v = clamp(t_v + b_v,
 *   +-2^30); the table of x exactly as table_body makes it; and for the row's logits l:
 *   ltop = max l, el = sum_v (f_v - sub)(l_v - ltop), as adapt._centred. */
/* the table's scale R 2^-sh for weights summing to sum (table_body's) */
INLINE double table_scale(int64_t sum, int V, int precision) {
    int64_t R;
    int sh;
    prob_scale(sum, ((int64_t)1 << precision) - V, &R, &sh);
    return (double)R * pow2d(-sh);
}

/* pass 1 over [lo, hi): x from l (and b); returns max x; *tl gets max l (the four
   combinations of tau and b written out, so that each loop vectorises) */
#define ADX_LOOP(T, B) do {                                                      \
        for (int v = lo; v < hi; v++) {                                          \
            int64_t t_ = (T) ? ((int64_t)l[v] * tau) >> 16 : l[v];                \
            t_ = t_ > (1 << 30) ? (1 << 30) : t_ < -(1 << 30) ? -(1 << 30) : t_; \
            t_ += (B) ? b[v] : 0;                                                \
            const int32_t xv = (int32_t)(t_ > (1 << 30) ? (1 << 30)               \
                                         : t_ < -(1 << 30) ? -(1 << 30) : t_);   \
            x[v] = xv;                                                           \
            tx = xv > tx ? xv : tx;                                              \
            ml = l[v] > ml ? l[v] : ml;                                          \
        }                                                                        \
    } while (0)
INLINE int32_t adx_span(int lo, int hi, const int32_t *restrict l, int64_t tau,
                        const int32_t *restrict b, int32_t *restrict x, int32_t *tl) {
    int32_t tx = INT32_MIN, ml = *tl;
    if (tau && b) ADX_LOOP(1, 1);
    else if (tau) ADX_LOOP(1, 0);
    else if (b) ADX_LOOP(0, 1);
    else ADX_LOOP(0, 0);
    *tl = ml;
    return tx;
}

/* pass 2: the sum of the weights exp2neg(top - x) (weights() without storing them) */
INLINE int64_t adx_wsum(int V, const int32_t *restrict x, int32_t top,
                        const int32_t *restrict exp32) {
    int64_t s = 0;
    for (int v = 0; v < V; v++) {
        uint32_t d = (uint32_t)(top - x[v]);
        uint32_t sh = d >> 10;
        sh = sh > 31 ? 31 : sh;
        s += exp32[d & 1023] >> sh;
    }
    return s;
}

/* pass 3: f = 1 + floor(e scale) from the weights again, their total, and the sums
   sum (f - sub) l and sum (f - sub) modulo 2^64 (el below) */
INLINE int64_t adx_table(int V, const int32_t *restrict x, int32_t top,
                         const int32_t *restrict exp32, double scale,
                         const int32_t *restrict l, int64_t sub, int32_t *restrict f,
                         uint64_t *s1, uint64_t *s2) {
    int64_t total = 0;
    uint64_t a1 = 0, a2 = 0;
    for (int v = 0; v < V; v++) {
        uint32_t d = (uint32_t)(top - x[v]);
        uint32_t sh = d >> 10;
        sh = sh > 31 ? 31 : sh;
        const int32_t e = exp32[d & 1023] >> sh;
        f[v] = 1 + (int32_t)((double)e * scale);    /* e R < 2^52: exact; >= 0: the
                                                       truncation is the floor */
        total += f[v];
        const int64_t w = (int64_t)f[v] - sub;
        a1 += (uint64_t)(w * (int64_t)l[v]);                     /* |w l| < 2^62 */
        a2 += (uint64_t)w;
    }
    *s1 = a1;
    *s2 = a2;
    return total;
}

/* One row; the edits (idx, val) of this row in increasing idx. x: scratch of V. */
INLINE void adrow_body(int V, const int32_t *l, int64_t tau, const int64_t *idx,
                       const int32_t *val, int64_t n_ed, const int32_t *b,
                       const int32_t *exp32, int precision, int64_t sub, int32_t *x,
                       int32_t *f, int32_t *ltop, int64_t *el) {
    int32_t tx = INT32_MIN, tl = INT32_MIN;
    int lo = 0;
    for (int64_t k = 0; k <= n_ed; k++) {
        const int hi = k < n_ed ? (int)idx[k] : V;
        int32_t t = adx_span(lo, hi, l, tau, b, x, &tl);
        tx = t > tx ? t : tx;
        if (k < n_ed) {                                  /* an edited entry */
            int64_t x_ = (int64_t)val[k] + (b ? b[hi] : 0);
            x[hi] = (int32_t)(x_ > (1 << 30) ? (1 << 30) : x_ < -(1 << 30) ? -(1 << 30) : x_);
            tx = x[hi] > tx ? x[hi] : tx;
            tl = l[hi] > tl ? l[hi] : tl;
            lo = hi + 1;
        }
    }
    int first = 0;
    while (x[first] != tx) first++;
    const double scale = table_scale(adx_wsum(V, x, tx, exp32), V, precision);
    uint64_t s1, s2;
    const int64_t total = adx_table(V, x, tx, exp32, scale, l, sub, f, &s1, &s2);
    const int64_t adj = ((int64_t)1 << precision) - total;
    f[first] += (int32_t)adj;
    s1 += (uint64_t)(adj * (int64_t)l[first]);
    s2 += (uint64_t)adj;
    *ltop = tl;
    *el = (int64_t)(s1 - (uint64_t)(int64_t)tl * s2);      /* the true value is < 2^62 */
}

#define ADROW_ARGS int V, const int32_t *l, int64_t tau, const int64_t *idx, \
    const int32_t *val, int64_t n_ed, const int32_t *b, const int32_t *exp32, int precision, \
    int64_t sub, int32_t *x, int32_t *f, int32_t *ltop, int64_t *el
#define ADROW_CALL V, l, tau, idx, val, n_ed, b, exp32, precision, sub, x, f, ltop, el
static void adrow_portable(ADROW_ARGS) { adrow_body(ADROW_CALL); }
#ifdef HAVE_LEVELS
T_AVX2 static void adrow_avx2(ADROW_ARGS) { adrow_body(ADROW_CALL); }
T_AVX512 static void adrow_avx512(ADROW_ARGS) { adrow_body(ADROW_CALL); }
#endif

/* Rows of logits l (M, V); edits: n_ed (flat index r V + v, value) pairs in increasing
   index; bias (V,) or NULL; tau in Q16 (2^14 .. 2^18) or 0 for none; sub 0 or 1.
   Writes the tables f (M, V), ltop (M,) and el (M,). Returns 0, -1 for bad arguments,
   2 out of memory. */
EXPORT int llmzip_ad_table(int M, int V, const int32_t *l, int64_t tau, const int64_t *ed_idx,
                           const int32_t *ed_val, int64_t n_ed, const int32_t *bias,
                           const int32_t *exp32, int precision, int64_t sub, int32_t *freqs,
                           int32_t *ltop, int64_t *el, int level) {
    if (M < 0 || V < 1 || tau < 0 || tau >= (1 << 19) || n_ed < 0 || sub < 0 || sub > 1
        || precision < 1 || precision > 30 || ((int64_t)1 << precision) <= V)
        return -1;
    for (int64_t k = 0; k < n_ed; k++)
        if (ed_idx[k] < 0 || ed_idx[k] >= (int64_t)M * V || (k && ed_idx[k] <= ed_idx[k - 1]))
            return -1;
    int32_t *x = pool_scratch(SCR_TABLE_L, sizeof(int32_t) * V);
    if (!x) return 2;
    void (*row)(ADROW_ARGS) = adrow_portable;
#ifdef HAVE_LEVELS
    if (level >= 2) row = adrow_avx512;
    else if (level == 1) row = adrow_avx2;
#else
    (void)level;
#endif
    int64_t k0 = 0;
    for (int r = 0; r < M; r++) {
        int64_t k1 = k0;
        while (k1 < n_ed && ed_idx[k1] < (int64_t)(r + 1) * V) k1++;
        int64_t *idx = NULL;
        if (k1 > k0) {                                   /* this row's edits, as v */
            idx = malloc(sizeof(int64_t) * (k1 - k0));
            if (!idx) return 2;
            for (int64_t k = k0; k < k1; k++) idx[k - k0] = ed_idx[k] - (int64_t)r * V;
        }
        row(V, l + (int64_t)r * V, tau, idx, ed_val + k0, k1 - k0, bias, exp32, precision, sub,
            x, freqs + (int64_t)r * V, ltop + r, el + r);
        free(idx);
        k0 = k1;
    }
    return 0;
}
