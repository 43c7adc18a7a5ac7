/* The exact engine's attention (docs/engine.md): scores, softmax and the weighted sum of
 * values over the KV cache, one (row, kv head) pair at a time (levels 0-3), in blocks of
 * 16 rows on AMX tiles (level 4), or with the positions split between threads
 * (exact_attention_split.c). The building blocks are in exact_attention.h.
 */
#include "exact_attention.h"

int g_vnni_values = 1;

/* Whether level 3 sums attention's weighted values in integers (values_vnni) or in
 * float64 (values_avx512); the same integers either way (tests and benchmarks compare
 * them). Returns the old setting. */
EXPORT int llmzip_ex_attention_vnni_values(int on) {
    const int old = g_vnni_values;
    g_vnni_values = on != 0;
    return old;
}

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
    if (level >= 2 && D % 32 == 0) {
        if (level < 3 || values_vnni(G, D, n, pi, vsd, vc, acc))
            values_avx512(G, D, n, pi, vsd, vc, acc, zi);
    } else if (level >= 1 && D % 16 == 0) values_avx2(G, D, n, z, vc, acc);
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
                              vsd + base + lo, n, exp32, z, acc, out, level);
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
    if (level < 4 || D % 64 || M < AMX_MIN_Q || Smax > 65536) {
        int longest = 0;
        for (int i = 0; i < M; i++) longest = row_pos[i] + 1 > longest ? row_pos[i] + 1 : longest;
        if (window > 0 && longest > window) longest = window;
        if (attention_split_wanted(M, K, longest, threads))
            return attention_split(&c, M, threads);
        return parallel_for((int64_t)M * K, threads, attention_item, &c) ? 2 : 0;
    }
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
