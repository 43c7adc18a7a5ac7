/* exact_attention_split.c -- attention for few rows over many positions, the positions
 * split between threads. */
#include "exact_attention.h"

/* A decoding step of one segment has K items (one per kv head): 1 for Gemma 3, so on 2
 * threads half the pool idles while that item reads thousands of cached keys and values.
 * (SmolLM2's 3 items keep 2 threads busy; split, they ran slower.) Where a call has fewer
 * (row, kv head) units than threads, each unit is cut into chunks of g_split_pos
 * positions, run in three passes: scores and their chunk maxima; the weights
 * 2^-(zmax - z) against the unit's maximum and their chunk sums; probabilities from the
 * unit's total and the chunk's weighted sums of values. Every quantity is the one-item
 * path's (the maximum and the sums are exact integers whatever the order; the weighted
 * sums are float64 integers below 2^47, exact in any order): the same integers. Gemma 3
 * at position 1,600 on an Intel Xeon, 2 threads: 122 -> 88 us a layer. */
static int g_split_pos = 256;          /* positions per chunk, a multiple of KT */

/* Set the chunk size (0 turns splitting off; tests make it small); returns the old one. */
EXPORT int llmzip_ex_attention_split(int positions) {
    const int old = g_split_pos;
    g_split_pos = positions <= 0 ? 0 : (positions + KT - 1) / KT * KT;
    return old;
}

typedef struct {
    int lo, n, t0, stride, off, nc;  /* positions lo .. lo + n - 1; tiles t0 ..; chunks */
    int64_t base;                    /* the cache row of (segment, kv head) */
    int64_t zat, dat;                /* offsets of its scores/weights and dot products */
} split_unit;

typedef struct {
    const attention_ctx *c;
    const split_unit *u;
    const int32_t *item_u, *item_c;  /* item k: unit item_u[k], chunk item_c[k] */
    int32_t *dot, *z, *e;            /* per unit: G x stride dots, G x n scores, weights */
    int32_t *zmax;                   /* per item, then per unit (first item's row): G */
    int64_t *den;                    /* per item: G */
    double *scale;                   /* per unit: G */
    double *acc;                     /* per item: G x D */
} split_ctx;

/* the positions of item k relative to its unit's lo: [*ja, *jb) */
static void split_span(const split_ctx *s, int64_t k, int *ja, int *jb) {
    const split_unit *u = s->u + s->item_u[k];
    const int c = s->item_c[k], sp = g_split_pos;
    const int a = c * sp - u->off, b = (c + 1) * sp - u->off;
    *ja = a < 0 ? 0 : a;
    *jb = b > u->n ? u->n : b;
}

/* pass 1: dot products of the chunk's tiles, scores and their maximum per head */
static int split_scores(void *ctx, int64_t k) {
    const split_ctx *s = ctx;
    const attention_ctx *c = s->c;
    const int G = c->H / c->K, D = c->D, level = c->level;
    const split_unit *u = s->u + s->item_u[k];
    const int ui = s->item_u[k], ci = s->item_c[k], tpc = g_split_pos / KT;
    const int i = ui / c->K, g = ui % c->K;
    const int ta = u->t0 + ci * tpc, tmax = u->t0 + u->stride / KT;
    const int tb = ta + tpc < tmax ? ta + tpc : tmax;
    const int16_t *q = c->q16 + ((int64_t)i * c->H + (int64_t)g * G) * D;
    const int8_t *ktb = c->kt + u->base * D;
    int32_t *dot = s->dot + u->dat;
    int32_t *dc = dot + (int64_t)(ta - u->t0) * KT;
#ifdef HAVE_LEVELS
    if (level >= 2) dots_avx512(G, D, q, ktb, ta, tb, dc, u->stride, level == 3);
    else if (level == 1) dots_avx2(G, D, q, ktb, ta, tb, dc, u->stride);
    else
#endif
        dots_portable(G, D, q, ktb, ta, tb, dc, u->stride);
    int ja, jb;
    split_span(s, k, &ja, &jb);
    for (int h = 0; h < G; h++) {
        const int32_t *dh = dot + (int64_t)h * u->stride + u->off + ja;
        const double *ks = c->ksd + u->base + u->lo + ja;
        const double cz = pow2d(c->eq[(int64_t)i * c->H + g * G + h]);
        int32_t *zh = s->z + u->zat + (int64_t)h * u->n + ja;
#ifdef HAVE_LEVELS
        if (level >= 2) s->zmax[k * G + h] = scores_avx512(dh, ks, cz, jb - ja, zh);
        else
#endif
            s->zmax[k * G + h] = scores(dh, ks, cz, jb - ja, zh);
    }
    return 0;
}

/* pass 2: weights against the unit's maximum (s->zmax at its first item) and their sum */
static int split_weights(void *ctx, int64_t k) {
    const split_ctx *s = ctx;
    const attention_ctx *c = s->c;
    const int G = c->H / c->K;
    const split_unit *u = s->u + s->item_u[k];
    const int32_t *zu = s->zmax + (int64_t)(k - s->item_c[k]) * G;
    int ja, jb;
    split_span(s, k, &ja, &jb);
    for (int h = 0; h < G; h++) {
        const int64_t at = u->zat + (int64_t)h * u->n + ja;
#ifdef HAVE_LEVELS
        if (c->level >= 2) s->den[k * G + h] = weights_avx512(s->z + at, zu[h], jb - ja, c->exp32, s->e + at);
        else
#endif
            s->den[k * G + h] = weights(s->z + at, zu[h], jb - ja, c->exp32, s->e + at);
    }
    return 0;
}

/* pass 3: probabilities from the unit's scale and the chunk's weighted sums of values */
INLINE int split_values_body(const split_ctx *s, int64_t k, int level) {
    const attention_ctx *c = s->c;
    const int G = c->H / c->K, D = c->D;
    const split_unit *u = s->u + s->item_u[k];
    const double *sc = s->scale + (int64_t)s->item_u[k] * G;
    int ja, jb;
    split_span(s, k, &ja, &jb);
    const int n = jb - ja;
    const double *vsd = c->vsd + u->base + u->lo + ja;
    const int8_t *vc = c->vc + (u->base + u->lo + ja) * D;
    double *acc = s->acc + k * G * D;
    for (int x = 0; x < G * D; x++) acc[x] = 0.0;
    double *w = pool_scratch(SCR_SPLIT_W, sizeof(double) * G * n + sizeof(int32_t) * n);
    if (!w) return 1;
#ifdef HAVE_LEVELS
    if (level >= 2 && D % 32 == 0) {
        int32_t *pi = (int32_t *)w;                   /* G x n int32, then n positions */
        for (int h = 0; h < G; h++)
            probs_avx512(s->e + u->zat + (int64_t)h * u->n + ja, sc[h], n, pi + (int64_t)h * n);
        if (c->level < 3 || values_vnni(G, D, n, pi, vsd, vc, acc))
            values_avx512(G, D, n, pi, vsd, vc, acc, pi + (int64_t)G * n);
        return 0;
    }
#endif
    for (int h = 0; h < G; h++) {                     /* w = floor(e R 2^-sh) vs */
        const int32_t *eh = s->e + u->zat + (int64_t)h * u->n + ja;
        for (int j = 0; j < n; j++) w[(int64_t)h * n + j] = floor((double)eh[j] * sc[h]) * vsd[j];
    }
#ifdef HAVE_LEVELS
    if (level >= 1 && D % 16 == 0) values_avx2(G, D, n, w, vc, acc);
    else
#endif
        values_portable(G, D, n, w, vc, acc);
    return 0;
}
static int split_values_portable(const split_ctx *s, int64_t k) { return split_values_body(s, k, 0); }
#ifdef HAVE_LEVELS
T_AVX2 static int split_values_avx2(const split_ctx *s, int64_t k) { return split_values_body(s, k, 1); }
T_AVX512 static int split_values_avx512(const split_ctx *s, int64_t k) { return split_values_body(s, k, 2); }
#endif
static int split_values(void *ctx, int64_t k) {
    const split_ctx *s = ctx;
#ifdef HAVE_LEVELS
    if (s->c->level >= 2) return split_values_avx512(s, k);
    if (s->c->level == 1) return split_values_avx2(s, k);
#endif
    return split_values_portable(s, k);
}

/* Whether a call of M rows, the longest over `longest` positions, takes this path */
int attention_split_wanted(int M, int K, int longest, int threads) {
    return threads > 1 && g_split_pos > 0 && M * K < threads && longest >= 2 * g_split_pos;
}

/* The M rows of c over chunks of positions */
int attention_split(const attention_ctx *c, int M, int threads) {
    const int K = c->K, G = c->H / K, D = c->D, sp = g_split_pos;
    const int nu = M * K;
    split_unit *u = malloc(sizeof(split_unit) * nu);
    if (!u) return 2;
    int64_t nitems = 0, nz = 0, nd = 0;
    for (int ui = 0; ui < nu; ui++) {
        const int i = ui / K, g = ui % K, p = c->row_pos[i];
        split_unit *x = u + ui;
        x->lo = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
        x->n = p - x->lo + 1;
        x->t0 = x->lo / KT;
        x->stride = (p / KT + 1 - x->t0) * KT;
        x->off = x->lo - x->t0 * KT;
        x->nc = (x->stride + sp - 1) / sp;
        x->base = ((int64_t)c->row_b[i] * K + g) * c->Smax;
        x->zat = nz;
        x->dat = nd;
        nz += (int64_t)G * x->n;
        nd += (int64_t)G * x->stride;
        nitems += x->nc;
    }
    /* one scratch block (the caller's): doubles first, then int64, then int32 */
    const size_t n_acc = (size_t)G * D * nitems, n_scale = (size_t)G * nu;
    const size_t n32 = 2 * (size_t)nitems + (size_t)nd + 2 * (size_t)nz + (size_t)G * nitems;
    double *acc = pool_scratch(SCR_SPLIT, 8 * (n_acc + n_scale + (size_t)G * nitems) + 4 * n32);
    int rc = 2;
    if (!acc) goto out;
    double *scale = acc + n_acc;
    int64_t *den = (int64_t *)(scale + n_scale);
    int32_t *items = (int32_t *)(den + (size_t)G * nitems);
    int32_t *dot = items + 2 * nitems, *z = dot + nd, *zmax = z + 2 * nz;
    for (int ui = 0, k = 0; ui < nu; ui++)
        for (int ci = 0; ci < u[ui].nc; ci++, k++) {
            items[k] = ui;
            items[nitems + k] = ci;
        }
    split_ctx s = {.c = c, .u = u, .item_u = items, .item_c = items + nitems, .dot = dot,
                   .z = z, .e = z + nz, .zmax = zmax, .den = den, .scale = scale, .acc = acc};
    if (parallel_for(nitems, threads, split_scores, &s)) goto out;
    for (int64_t k = 0; k < nitems; k++) {           /* each unit's maximum: its first item */
        const int64_t f = k - s.item_c[k];
        if (f != k)
            for (int h = 0; h < G; h++)
                zmax[f * G + h] = zmax[k * G + h] > zmax[f * G + h] ? zmax[k * G + h] : zmax[f * G + h];
    }
    if (parallel_for(nitems, threads, split_weights, &s)) goto out;
    for (int ui = 0, k = 0; ui < nu; k += u[ui].nc, ui++)
        for (int h = 0; h < G; h++) {
            int64_t total = 0, R;
            int sh;
            for (int ci = 0; ci < u[ui].nc; ci++) total += den[(k + ci) * G + h];
            prob_scale(total, (int64_t)1 << 16, &R, &sh);
            scale[(int64_t)ui * G + h] = (double)R * pow2d(-sh);   /* R 2^-sh: exact */
        }
    if (parallel_for(nitems, threads, split_values, &s)) goto out;
    for (int ui = 0, k = 0; ui < nu; k += u[ui].nc, ui++) {
        const int i = ui / K, g = ui % K;
        int64_t *y = c->y + ((int64_t)i * c->H + (int64_t)g * G) * D;
        for (int x = 0; x < G * D; x++) {
            double a = 0.0;
            for (int ci = 0; ci < u[ui].nc; ci++) a += acc[(int64_t)(k + ci) * G * D + x];
            y[x] = floor_div((int64_t)a, (int64_t)127 << 16);
        }
    }
    rc = 0;
out:
    free(u);
    return rc;
}
