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

/* qkv (M, H + 2K, D) int64 in Q12 (after any per-head norm), row_b/row_pos per row:
 * q rotated and quantised per head (q16, eq); k rotated and v written to the caches
 * kc/vc (B, K, Smax, D) int8 with scales ks/vs (B, K, Smax). cos/sin (n_pos, D/2). */
EXPORT int llmzip_ex_qkv(int M, int H, int K, int D, int64_t *qkv, const int32_t *row_b,
                  const int32_t *row_pos, const int64_t *cos_t, const int64_t *sin_t,
                  int halves, int16_t *q16, int32_t *eq, int8_t *kc, int64_t *ks,
                  int8_t *vc, int64_t *vs, int Smax, int threads) {
    PARALLEL_FOR(threads)
    for (int i = 0; i < M; i++) {
        int64_t *r = qkv + (int64_t)i * (H + 2 * K) * D;
        const int64_t *c = cos_t + (int64_t)row_pos[i] * (D / 2);
        const int64_t *s = sin_t + (int64_t)row_pos[i] * (D / 2);
        for (int h = 0; h < H + K; h++) rope_vec(r + (int64_t)h * D, D, c, s, halves);
        for (int64_t j = 0; j < (int64_t)(H + 2 * K) * D; j++)   /* attention's bound */
            r[j] = r[j] > ATT_CLAMP ? ATT_CLAMP : r[j] < -ATT_CLAMP ? -ATT_CLAMP : r[j];
        for (int h = 0; h < H; h++)
            quant_row(r + (int64_t)h * D, D, 32767, q16 + ((int64_t)i * H + h) * D, eq + (int64_t)i * H + h);
        for (int g = 0; g < K; g++) {
            int64_t slot = ((int64_t)row_b[i] * K + g) * Smax + row_pos[i];
            quant_kv(r + (int64_t)(H + g) * D, D, kc + slot * D, ks + slot);
            quant_kv(r + (int64_t)(H + K + g) * D, D, vc + slot * D, vs + slot);
        }
    }
    return 0;
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

/* ---- attention ------------------------------------------------------------------ */
/* For each row i (segment row_b[i], position row_pos[i]) and query head h: scores over
 * cached positions lo..p (lo = p - window + 1 when window > 0), softmax through the
 * 2^-x table with 16-bit weights, weighted sum of int8 values. y (M, H*D) int64 Q12.
 * zshift = 30 + 2*12 - 10 - 16 = 28: z = rsr(rsr(dot * ks, 16) * A, zshift - eq). */
EXPORT int llmzip_ex_attention(int M, int H, int K, int D, const int16_t *q16, const int32_t *eq,
                        const int32_t *row_b, const int32_t *row_pos, const int8_t *kc,
                        const int64_t *ks, const int8_t *vc, const int64_t *vs, int Smax,
                        int window, int64_t A, int zshift, const int64_t *exp_t,
                        int64_t *y, int threads) {
    int G = H / K, bad = 0;
    PARALLEL_FOR_BAD(threads)
    for (int64_t ih = 0; ih < (int64_t)M * H; ih++) {
        int i = (int)(ih / H), h = (int)(ih % H), g = h / G;
        int p = row_pos[i];
        int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        int n = p - lo + 1;
        int64_t *z = malloc(sizeof(int64_t) * n);
        double *acc = malloc(sizeof(double) * D);
        if (!z || !acc) { free(z); free(acc); bad = 1; continue; }
        const int16_t *q = q16 + ((int64_t)i * H + h) * D;
        int sh = zshift - eq[(int64_t)i * H + h];
        int64_t base = ((int64_t)row_b[i] * K + g) * Smax;
        int64_t zmax = INT64_MIN;
        for (int j = 0; j < n; j++) {
            const int8_t *k = kc + (base + lo + j) * D;
            int32_t dot = 0;
            for (int d = 0; d < D; d++) dot += (int32_t)q[d] * k[d];
            int64_t zz = rsr(rsr((int64_t)dot * ks[base + lo + j], 16) * A, sh);
            z[j] = zz;
            if (zz > zmax) zmax = zz;
        }
        int64_t den = 0;
        for (int j = 0; j < n; j++) { z[j] = exp2_neg(exp_t, zmax - z[j]); den += z[j]; }
        int64_t recip = ((int64_t)1 << 62) / den;          /* den >= 2^30 > 0 */
        for (int d = 0; d < D; d++) acc[d] = 0.0;
        for (int j = 0; j < n; j++) {
            int64_t pj = (z[j] * recip) >> 46;
            if (!pj) continue;
            double w = (double)(pj * vs[base + lo + j]);   /* < 2^37: exact */
            const int8_t *v = vc + (base + lo + j) * D;
            for (int d = 0; d < D; d++) acc[d] += w * (double)v[d];   /* sums < 2^53: exact */
        }
        int64_t *out = y + ((int64_t)i * H + h) * D;
        for (int d = 0; d < D; d++) out[d] = floor_div((int64_t)acc[d], (int64_t)127 << 16);
        free(z); free(acc);
    }
    return bad ? 2 : 0;
}

/* ---- output layer to frequency tables ------------------------------------------- */
/* logits l = rsr(acc * mult, shift - e) (Q10, log2 units); e_v = exp2_neg(max - l);
 * f = 1 + (e_v * R >> 38), R = floor(spare * 2^38 / sum e); remainder to the first max. */
EXPORT int llmzip_ex_freqs(int M, int V, const int32_t *acc, const int64_t *mult, int shift,
                    const int32_t *e, const int64_t *exp_t, int precision, int32_t *freqs,
                    int threads) {
    int bad = 0;
    int64_t spare = ((int64_t)1 << precision) - V;
    PARALLEL_FOR(threads)
    for (int i = 0; i < M; i++) {
        int64_t *l = malloc(sizeof(int64_t) * V);
        if (!l) { bad = 1; continue; }
        const int32_t *a = acc + (int64_t)i * V;
        int32_t *f = freqs + (int64_t)i * V;
        int s = shift - e[i];
        int64_t top = INT64_MIN;
        int first = 0;
        for (int v = 0; v < V; v++) {
            l[v] = rsr((int64_t)a[v] * mult[v], s);
            if (l[v] > top) { top = l[v]; first = v; }
        }
        int64_t sum = 0;
        for (int v = 0; v < V; v++) { l[v] = exp2_neg(exp_t, top - l[v]); sum += l[v]; }
        int64_t R = (spare << 38) / sum, total = 0;
        for (int v = 0; v < V; v++) { f[v] = (int32_t)(1 + ((l[v] * R) >> 38)); total += f[v]; }
        f[first] += (int32_t)(((int64_t)1 << precision) - total);
        free(l);
    }
    return bad ? 2 : 0;
}
