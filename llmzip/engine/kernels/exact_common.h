/* What exact_ops.c and exact_attention.c share: integer helpers of docs/engine.md. */
#ifndef LLMZIP_EXACT_COMMON_H
#define LLMZIP_EXACT_COMMON_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "pool.h"

/* Threads: every parallel loop runs on the one pool of pool.c, shared with the matrix
 * product (OpenMP's threads beside it took its CPUs: pool.c says why). A loop's body is a
 * static function of (context struct, item) returning 0, or 1 when it failed to allocate:
 *
 *     typedef struct { int C; const int64_t *x; ... } foo_ctx;
 *     static int foo_row(void *p, int64_t i) {
 *         const foo_ctx *c = p;
 *         int64_t *tmp = malloc(...);
 *         if (!tmp) return 1;                 (was: bad = 1; continue;)
 *         ... row i ...
 *         free(tmp);
 *         return 0;
 *     }
 *     EXPORT int llmzip_ex_foo(int M, ..., int threads) {
 *         foo_ctx c = {.C = C, .x = x, ...};
 *         return parallel_for(M, threads, foo_row, &c) ? 2 : 0;
 *     }
 *
 * The OpenMP pragmas PARALLEL_FOR(n) / PARALLEL_FOR_BAD(n) that loops used before are gone;
 * the names still compile (with a warning) so that a loop written for them keeps working,
 * on one thread, until it is rewritten as above. */
#define PARALLEL_FOR(n) \
    _Pragma("GCC warning \"PARALLEL_FOR runs on one thread: use parallel_for (pool.h)\"")
#define PARALLEL_FOR_BAD(n) \
    _Pragma("GCC warning \"PARALLEL_FOR_BAD runs on one thread: use parallel_for (pool.h)\"")

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

/* rsr(v, s) = (v * mul + rnd) >> sh for all v: the shift's parts computed once per row, so
 * that a loop over a row has no branch (and vectorises) */
typedef struct { int64_t mul, rnd; int sh; } rsr_t;
static inline rsr_t rsr_parts(int s) {
    rsr_t r;
    r.mul = s <= 0 ? (int64_t)1 << -s : 1;
    r.rnd = s <= 0 ? 0 : (int64_t)1 << (s - 1);
    r.sh = s <= 0 ? 0 : s;
    return r;
}
#define RSR(v, P) (((v) * (P).mul + (P).rnd) >> (P).sh)

/* floor(a / b) for b > 0 and |a / b| < 2^50, without an integer division: inv = 1.0 / b
 * (rounded), so the float64 quotient is within 1 of a / b, and one step each way makes it
 * exact (the result is the integer floor_div gives) */
static inline __attribute__((always_inline)) int64_t floor_div_inv(int64_t a, int64_t b,
                                                                   double inv) {
    int64_t q = (int64_t)floor((double)a * inv);
    q -= (q * b > a);
    q += ((q + 1) * b <= a);
    return q;
}

/* 2^30 * 2^(-d/1024) for d >= 0 */
static inline int64_t exp2_neg(const int64_t *t, int64_t d) {
    int64_t sh = d >> 10;
    return sh >= 63 ? 0 : t[d & 1023] >> sh;
}


/* 2^e as a double, for -1022 <= e <= 1023 (exact) */
static inline double pow2d(int e) {
    union { uint64_t u; double d; } v;
    v.u = (uint64_t)(1023 + e) << 52;
    return v.d;
}

/* ---- SIMD levels of the hot loops ----------------------------------------------
 * The same C source compiled three times with the target attribute (GCC inlines the
 * body into each wrapper, so the compiler vectorises it for that instruction set);
 * all arithmetic is exact, so every level gives the same integers. level: 0 portable,
 * 1 AVX2 + FMA, 2 AVX-512 (F, BW, DQ, VL), 3 the same plus AVX-512 VNNI (attention's dot
 * products; elsewhere as 2). */
#if defined(__x86_64__)
#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define HAVE_LEVELS 1
#else
#define T_AVX2
#define T_AVX512
#endif
#define INLINE static inline __attribute__((always_inline))

/* name##_l2 / name##_l1: an INLINE row function compiled for AVX-512 and AVX2;
 * AT_LEVEL(level, name, (args)) calls the one for level (0: the portable build) */
#ifdef HAVE_LEVELS
#define LEVEL_VARIANTS(name, params, args)                                        \
    T_AVX512 static void name##_l2 params { name args; }                          \
    T_AVX2 static void name##_l1 params { name args; }
#define AT_LEVEL(level, name, args)                                               \
    do { if ((level) >= 2) name##_l2 args; else if ((level) == 1) name##_l1 args; \
         else name args; } while (0)
#else
#define LEVEL_VARIANTS(name, params, args)
#define AT_LEVEL(level, name, args) name args
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#endif
