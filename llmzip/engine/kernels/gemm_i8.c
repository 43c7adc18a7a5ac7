/*
 * gemm_i8.c -- exact integer GEMM for llmzip:  C[m][n] = sum_k A[m][k] * W[n][k]
 *
 *   A : int16 (M, K) row-major, row stride lda      (activations)
 *   W : int8  (N, K) row-major, packed once         (weights)
 *   C : int32 (M, N) row-major, row stride ldc
 *
 * Every path computes the exact sum modulo 2^32 (two's-complement wrap-around),
 * so whenever the true sum fits in int32 (the caller's contract) every path,
 * every thread count and every blocking gives the same bits.  The portable
 * path accumulates in uint32_t for that reason (no signed-overflow UB).
 *
 * ---------------------------------------------------------------------------
 * Packed weight layout (shared by ALL paths)
 * ---------------------------------------------------------------------------
 *   NR = 32 output columns per panel, Kp = K rounded up to even.
 *   Panel p (columns n = 32p .. 32p+31) is one contiguous block of Kp*32 bytes:
 *
 *     panel[p][kp][j][e] = W[32p + j][2kp + e]      kp < Kp/2, j < 32, e < 2
 *
 *   i.e. for each pair of k values, 64 bytes = 32 columns x (w[k], w[k+1]).
 *   Columns n >= N and the odd-K pad (k = K) are zero.
 *   Total size = ceil(N/32) * Kp * 32 bytes.
 *
 *   A 32-byte chunk (16 columns) sign-extends with vpmovsxbw into one zmm of
 *   16 int16 pairs, i.e. exactly the "b" operand of vpmaddwd / vpdpwssd; the
 *   "a" operand is the int32 broadcast of (A[m][2kp], A[m][2kp+1]), which is a
 *   plain 4-byte load from the row-major A.  16-byte chunks (8 columns) give
 *   the ymm operands of the AVX2 / AVX-VNNI paths.
 *
 * ---------------------------------------------------------------------------
 * Microkernels (one tile = mr rows x one panel, the whole K in registers)
 * ---------------------------------------------------------------------------
 *   AVX-512 VNNI : 12 x 32  -> 24 zmm accumulators, per k-pair 2 vpmovsxbw,
 *                  12 vpbroadcastd, 24 vpdpwssd.
 *   AVX-512BW    : 12 x 32  -> same with vpmaddwd + vpaddd.
 *   AVX-VNNI     : 6 x 16 (two half-panel passes) -> 12 ymm accumulators.
 *   AVX2         : 6 x 16 (two half-panel passes) with vpmaddwd + vpaddd.
 *   Portable     : plain C loops over the same layout.
 *   AMX          : 16 x 32 tiles in Intel AMX tile registers, over a second
 *                  packed copy of the weights (see "AMX" below).
 *   Tiles of 1-3 rows (decode) use 2-4 accumulator sets over consecutive
 *   k-pairs to hide the multiply-add latency, added at the end (exact).
 *   Tiles prefetch the same k-pair line of the next panel (one panel ahead)
 *   into L2, which keeps DRAM-resident weights (LM heads) streaming.
 *
 * Blocking (run_block): rows in blocks of MC (MC*K*2 bytes of A ~ 256 KiB,
 * L2), panels in chunks of ~384 KiB of packed weights (L2).  For each row
 * block and panel chunk, every mr-row tile runs over all panels of the chunk:
 * the A tile stays in L1, the weights come from L2, and each C row is written
 * as one sequential stream.  For M <= MC the weights are streamed from memory
 * exactly once, in memory order.
 *
 * Threads: the exact kernels' one thread pool (pool.c: pthreads, no OpenMP).
 * The work is cut into ~4 chunks per thread -- ranges of N panels, or ranges
 * of row tiles when there are few panels and many rows -- claimed dynamically
 * (an atomic counter), so on a busy machine a descheduled thread costs at
 * most one chunk.  Which thread computes which chunk never changes a bit.
 */
#define _GNU_SOURCE            /* syscall() (AMX permission) under -std=c11 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_i8.h"
#include "pool.h"
#include "amx.h"

/* All x86 code sits under GEMM_X86; -DGEMM_I8_NO_X86 builds the portable
   path alone on x86 (what an aarch64 build compiles). */
#if defined(__x86_64__) && !defined(GEMM_I8_NO_X86)
#define GEMM_X86 1
#include <immintrin.h>
#include <cpuid.h>
#endif

#define NR 32
#define EXPORT __attribute__((visibility("default")))

enum {
    GEMM_OK = 0,
    GEMM_EINVAL = -1,      /* bad argument */
    GEMM_EPATH = -2,       /* path unknown or not supported by this CPU */
    GEMM_ENOMEM = 2,       /* out of memory (the AMX path's split activations) */
};
enum { PATH_AUTO = 0, PATH_PORTABLE = 1, PATH_AVX2 = 2, PATH_AVX512BW = 3,
       PATH_AVX512VNNI = 4, PATH_AVXVNNI = 5, PATH_AMX = 6, PATH_COUNT = 7 };

static inline int32_t load_pair(const int16_t *p)  /* (p[0], p[1]) as one int32 */
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* last, odd k: pair (a, 0) */
static inline int32_t load_last(const int16_t *p) { return (int32_t)(uint16_t)p[0]; }

/* pf: the tile is the first to read this panel in its row block, so the
   weights come from memory: prefetch ahead (see PF_NEXT) */
typedef void (*tile_fn)(int mr, const int16_t *A, ptrdiff_t lda, const int8_t *Wp,
                        int64_t K, int32_t *C, ptrdiff_t ldc, int ncols, int pf);

/* ========================================================================= */
/* Portable path: plain loops over the packed layout                          */
/* ========================================================================= */
static void tile_portable(int mr, const int16_t *A, ptrdiff_t lda, const int8_t *Wp,
                          int64_t K, int32_t *C, ptrdiff_t ldc, int ncols, int pf)
{
    (void)pf;
    const int64_t K2 = K / 2;
    for (int r = 0; r < mr; r++) {
        const int16_t *a = A + r * lda;
        uint32_t acc[NR];
        for (int j = 0; j < NR; j++) acc[j] = 0;
        for (int64_t kp = 0; kp < K2; kp++) {
            const uint32_t a0 = (uint32_t)(int32_t)a[2 * kp], a1 = (uint32_t)(int32_t)a[2 * kp + 1];
            const int8_t *w = Wp + kp * 2 * NR;
            for (int j = 0; j < NR; j++)
                acc[j] += a0 * (uint32_t)(int32_t)w[2 * j] + a1 * (uint32_t)(int32_t)w[2 * j + 1];
        }
        if (K & 1) {
            const uint32_t a0 = (uint32_t)(int32_t)a[K - 1];
            const int8_t *w = Wp + K2 * 2 * NR;
            for (int j = 0; j < NR; j++) acc[j] += a0 * (uint32_t)(int32_t)w[2 * j];
        }
        for (int j = 0; j < ncols; j++) C[r * ldc + j] = (int32_t)acc[j];
    }
}

#if defined(GEMM_X86)
/* ========================================================================= */
/* AVX-512 (VNNI and BW): tile = mr (<= 12) rows x 32 columns                */
/* ========================================================================= */
/* Accumulators are named scalars (c<r>a: columns 0-15, c<r>b: 16-31), one   */
/* X-macro per row, `if (r < mr)` with mr constant after inlining: gcc keeps  */
/* them in registers (arrays of vectors made it spill).                       */
#define MR512 12
#define ROWS3(X) X(0) X(1) X(2)
#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define ROWS12(X) ROWS6(X) X(6) X(7) X(8) X(9) X(10) X(11)

#define T_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define T_BW512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define T_AVX2 __attribute__((target("avx2")))
#define T_AVXVNNI __attribute__((target("avx2,avxvnni")))

/* Software prefetch of the same k-pair line of the NEXT panel, one panel
   (Kp*32 bytes) ahead, done only by the first tile of a row block to read a
   panel (pf), i.e. while the weights come from memory; the later tiles find
   the panel chunk in L2 and must not pull a second panel into L1 (that cost
   ~30 % at M = 4096).  With it, weights streamed from DRAM keep up with the
   tiles (LM heads, M = 8..64: Gemma M = 8 300 -> 485 GOP/s; the AVX2 decode
   tiles +40-80 %).  Not in the zmm decode tiles (1-3 rows): there the extra
   loads cost up to 30 % when the weights sit in L2/L3 and gained nothing
   from DRAM (already at the bandwidth).  A prefetch never faults, so running
   past the last panel is harmless. */
#define NEXT_PANEL (((K + 1) & ~(int64_t)1) * NR)
#define PF_NEXT(off) if (pf) _mm_prefetch((const char *)(w + NEXT_PANEL + (off)), _MM_HINT_T0);

/* 32 weight bytes (16 columns x one k-pair) -> 16 int16 pairs */
#define W512(off) _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + (off))))
/* (A[r][2kp], A[r][2kp+1]) broadcast as int32 */
#define A512(r, kp) _mm512_set1_epi32(load_pair(A + (r) * lda + 2 * (kp)))

/* accumulator sets: c (k-pair kp), and for decode tiles d, e, f (kp+1..kp+3) */
#define Z_DECL_(r, S) __m512i S##r##a = _mm512_setzero_si512(), S##r##b = _mm512_setzero_si512();
#define Z_DECL(r) Z_DECL_(r, c)
#define Z_DECL2(r) Z_DECL_(r, d)
#define Z_DECL34(r) Z_DECL_(r, e) Z_DECL_(r, f)
#define Z_ACC(r, S, OFF, WA, WB)                                                       \
    if (r < mr) {                                                                      \
        const __m512i a = A512(r, kp + (OFF));                                         \
        S##r##a = DOT(S##r##a, a, WA);                                                 \
        S##r##b = DOT(S##r##b, a, WB);                                                 \
    }
#define Z_STEP(r) Z_ACC(r, c, 0, w0, w1)
#define Z_STEP2(r) Z_ACC(r, d, 1, w2, w3)
#define Z_STEP3(r) Z_ACC(r, e, 2, w4, w5)
#define Z_STEP4(r) Z_ACC(r, f, 3, w6, w7)
#define Z_LAST(r) /* odd K: pair (A[r][K-1], 0) */                                    \
    if (r < mr) {                                                                      \
        const __m512i a = _mm512_set1_epi32(load_last(A + (r) * lda + K - 1));         \
        c##r##a = DOT(c##r##a, a, w0);                                                 \
        c##r##b = DOT(c##r##b, a, w1);                                                 \
    }
#define Z_MERGE(r)                                                                     \
    if (r < mr) {                                                                      \
        c##r##a = _mm512_add_epi32(c##r##a, d##r##a);                                  \
        c##r##b = _mm512_add_epi32(c##r##b, d##r##b);                                  \
    }
#define Z_MERGE34(r)                                                                   \
    if (r < mr) {                                                                      \
        c##r##a = _mm512_add_epi32(c##r##a, _mm512_add_epi32(e##r##a, f##r##a));       \
        c##r##b = _mm512_add_epi32(c##r##b, _mm512_add_epi32(e##r##b, f##r##b));       \
    }
#define Z_STORE(r)                                                                     \
    if (r < mr) {                                                                      \
        _mm512_mask_storeu_epi32((void *)(C + (r) * ldc), m0, c##r##a);                \
        _mm512_mask_storeu_epi32((void *)(C + (r) * ldc + 16), m1, c##r##b);           \
    }

#define TILE512_TAIL(ROWS)                                                             \
    if (K & 1) {                                                                       \
        const int8_t *w = Wp + K2 * 2 * NR;                                            \
        const __m512i w0 = W512(0), w1 = W512(32);                                     \
        ROWS(Z_LAST)                                                                   \
    }                                                                                  \
    const __mmask16 m0 = ncols >= 16 ? 0xFFFF : (__mmask16)((1u << ncols) - 1);        \
    const __mmask16 m1 = ncols >= 32 ? 0xFFFF                                          \
                       : ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);      \
    ROWS(Z_STORE)

/* main tile, mr = 4..12 rows */
#define TILE512_BODY                                                                   \
    const int64_t K2 = K / 2;                                                          \
    ROWS12(Z_DECL)                                                                     \
    for (int64_t kp = 0; kp < K2; kp++) {                                              \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        PF_NEXT(0)                                                                     \
        const __m512i w0 = W512(0), w1 = W512(32);                                     \
        ROWS12(Z_STEP)                                                                 \
    }                                                                                  \
    TILE512_TAIL(ROWS12)

/* decode tiles: independent accumulator sets over consecutive k-pairs hide
   the multiply-add latency (few rows = few independent chains); the sets
   are added at the end (exact in any order).  mr = 3: two sets. */
#define TILE512_K2_BODY                                                                \
    const int64_t K2 = K / 2; (void)pf;                                                \
    ROWS3(Z_DECL) ROWS3(Z_DECL2)                                                       \
    int64_t kp = 0;                                                                    \
    for (; kp + 2 <= K2; kp += 2) {                                                    \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        const __m512i w0 = W512(0), w1 = W512(32), w2 = W512(64), w3 = W512(96);       \
        ROWS3(Z_STEP) ROWS3(Z_STEP2)                                                   \
    }                                                                                  \
    for (; kp < K2; kp++) {                                                            \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        const __m512i w0 = W512(0), w1 = W512(32);                                     \
        ROWS3(Z_STEP)                                                                  \
    }                                                                                  \
    ROWS3(Z_MERGE)                                                                     \
    TILE512_TAIL(ROWS3)

/* mr = 1, 2: four sets */
#define ROWS2(X) X(0) X(1)
#define TILE512_K4_BODY                                                                \
    const int64_t K2 = K / 2; (void)pf;                                                \
    ROWS2(Z_DECL) ROWS2(Z_DECL2) ROWS2(Z_DECL34)                                       \
    int64_t kp = 0;                                                                    \
    for (; kp + 4 <= K2; kp += 4) {                                                    \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        const __m512i w0 = W512(0), w1 = W512(32), w2 = W512(64), w3 = W512(96);       \
        const __m512i w4 = W512(128), w5 = W512(160), w6 = W512(192), w7 = W512(224);  \
        ROWS2(Z_STEP) ROWS2(Z_STEP2) ROWS2(Z_STEP3) ROWS2(Z_STEP4)                     \
    }                                                                                  \
    for (; kp < K2; kp++) {                                                            \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        const __m512i w0 = W512(0), w1 = W512(32);                                     \
        ROWS2(Z_STEP)                                                                  \
    }                                                                                  \
    ROWS2(Z_MERGE) ROWS2(Z_MERGE34)                                                    \
    TILE512_TAIL(ROWS2)

#define TILE_ARGS const int16_t *A, ptrdiff_t lda, const int8_t *Wp, int64_t K, \
                  int32_t *C, ptrdiff_t ldc, int ncols, int pf

/* One non-inlined function per tile height: mr is a constant inside. */
#define DEF_TILE(T, name, BODY, MRV) \
    static T __attribute__((noinline)) void name##_##MRV(TILE_ARGS) { const int mr = MRV; BODY }

/* The multiply-adds are one-line asm: with the intrinsics gcc 12 copies and
   spills the accumulators inside the loop (arrays or not); the asm pins the
   accumulator as a tied register operand.  Everything else is intrinsics. */
#define DOT(acc, a, w) ({ __m512i acc_ = (acc); \
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc_) : "v"(a), "v"(w)); acc_; })
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_K4_BODY, 1)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_K4_BODY, 2)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_K2_BODY, 3)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 4)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 5)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 6)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 7)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 8)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 9)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 10)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 11)
DEF_TILE(T_VNNI512, tile_vnni512, TILE512_BODY, 12)
#undef DOT
#define DOT(acc, a, w) ({ __m512i acc_ = (acc), t_; \
    __asm__("vpmaddwd %3, %2, %1\n\tvpaddd %1, %0, %0" : "+v"(acc_), "=&v"(t_) : "v"(a), "v"(w)); acc_; })
DEF_TILE(T_BW512, tile_bw512, TILE512_K4_BODY, 1)
DEF_TILE(T_BW512, tile_bw512, TILE512_K4_BODY, 2)
DEF_TILE(T_BW512, tile_bw512, TILE512_K2_BODY, 3)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 4)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 5)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 6)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 7)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 8)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 9)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 10)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 11)
DEF_TILE(T_BW512, tile_bw512, TILE512_BODY, 12)
#undef DOT

#define CALL(fn, n) fn##_##n(A, lda, Wp, K, C, ldc, ncols, pf); break;
#define TILE_SWITCH12(fn)                                                              \
    switch (mr) {                                                                      \
    case 1: CALL(fn, 1) case 2: CALL(fn, 2) case 3: CALL(fn, 3) case 4: CALL(fn, 4)    \
    case 5: CALL(fn, 5) case 6: CALL(fn, 6) case 7: CALL(fn, 7) case 8: CALL(fn, 8)    \
    case 9: CALL(fn, 9) case 10: CALL(fn, 10) case 11: CALL(fn, 11)                   \
    default: CALL(fn, 12)                                                              \
    }

static T_VNNI512 void tile_vnni512(int mr, TILE_ARGS) { TILE_SWITCH12(tile_vnni512) }
static T_BW512 void tile_bw512(int mr, TILE_ARGS) { TILE_SWITCH12(tile_bw512) }

/* ========================================================================= */
/* AVX2 / AVX-VNNI (ymm, 16 registers): tile = mr (<= 6) rows x 16 columns,  */
/* run twice per 32-column panel (byte offsets 0 and 32 of each k-pair).     */
/* ========================================================================= */
#define MR256 6

/* 16 weight bytes (8 columns x one k-pair) -> 8 int16 pairs */
#define W256(off) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + (off))))
#define A256(r, kp) _mm256_set1_epi32(load_pair(A + (r) * lda + 2 * (kp)))

#define Y_DECL(r) __m256i c##r##a = _mm256_setzero_si256(), c##r##b = _mm256_setzero_si256();
#define Y_DECL2(r) __m256i d##r##a = _mm256_setzero_si256(), d##r##b = _mm256_setzero_si256();
#define Y_STEP(r)                                                                      \
    if (r < mr) {                                                                      \
        const __m256i a = A256(r, kp);                                                 \
        c##r##a = DOT(c##r##a, a, w0);                                                 \
        c##r##b = DOT(c##r##b, a, w1);                                                 \
    }
#define Y_STEP2(r)                                                                     \
    if (r < mr) {                                                                      \
        const __m256i a = A256(r, kp + 1);                                             \
        d##r##a = DOT(d##r##a, a, w2);                                                 \
        d##r##b = DOT(d##r##b, a, w3);                                                 \
    }
#define Y_LAST(r)                                                                      \
    if (r < mr) {                                                                      \
        const __m256i a = _mm256_set1_epi32(load_last(A + (r) * lda + K - 1));         \
        c##r##a = DOT(c##r##a, a, w0);                                                 \
        c##r##b = DOT(c##r##b, a, w1);                                                 \
    }
#define Y_MERGE(r)                                                                     \
    if (r < mr) {                                                                      \
        c##r##a = _mm256_add_epi32(c##r##a, d##r##a);                                  \
        c##r##b = _mm256_add_epi32(c##r##b, d##r##b);                                  \
    }
#define Y_STORE(r)                                                                     \
    if (r < mr) {                                                                      \
        _mm256_storeu_si256((__m256i *)(C + (r) * ldc), c##r##a);                      \
        _mm256_storeu_si256((__m256i *)(C + (r) * ldc + 8), c##r##b);                  \
    }
#define Y_MSTORE(r)                                                                    \
    if (r < mr) {                                                                      \
        _mm256_maskstore_epi32(C + (r) * ldc, m0, c##r##a);                            \
        _mm256_maskstore_epi32(C + (r) * ldc + 8, m1, c##r##b);                        \
    }

#define TILE256_TAIL(ROWS)                                                             \
    if (K & 1) {                                                                       \
        const int8_t *w = Wp + K2 * 2 * NR;                                            \
        const __m256i w0 = W256(0), w1 = W256(16);                                     \
        ROWS(Y_LAST)                                                                   \
    }                                                                                  \
    if (ncols >= 16) {                                                                 \
        ROWS(Y_STORE)                                                                  \
    } else {                                                                           \
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                \
        const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(ncols), lane);         \
        const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(ncols - 8), lane);     \
        ROWS(Y_MSTORE)                                                                 \
    }

#define TILE256_BODY                                                                   \
    const int64_t K2 = K / 2;                                                          \
    ROWS6(Y_DECL)                                                                      \
    for (int64_t kp = 0; kp < K2; kp++) {                                              \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        PF_NEXT(0)                                                                     \
        const __m256i w0 = W256(0), w1 = W256(16);                                     \
        ROWS6(Y_STEP)                                                                  \
    }                                                                                  \
    TILE256_TAIL(ROWS6)

#define TILE256_SMALL_BODY                                                             \
    const int64_t K2 = K / 2;                                                          \
    ROWS2(Y_DECL) ROWS2(Y_DECL2)                                                       \
    int64_t kp = 0;                                                                    \
    for (; kp + 2 <= K2; kp += 2) {                                                    \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        PF_NEXT(0) PF_NEXT(64)                                                         \
        const __m256i w0 = W256(0), w1 = W256(16), w2 = W256(64), w3 = W256(80);       \
        ROWS2(Y_STEP) ROWS2(Y_STEP2)                                                   \
    }                                                                                  \
    if (kp < K2) {                                                                     \
        const int8_t *w = Wp + kp * 2 * NR;                                            \
        const __m256i w0 = W256(0), w1 = W256(16);                                     \
        ROWS2(Y_STEP)                                                                  \
    }                                                                                  \
    ROWS2(Y_MERGE)                                                                     \
    TILE256_TAIL(ROWS2)

#define DOT(acc, a, w) ({ __m256i acc_ = (acc), t_; \
    __asm__("vpmaddwd %3, %2, %1\n\tvpaddd %1, %0, %0" : "+x"(acc_), "=&x"(t_) : "x"(a), "x"(w)); acc_; })
DEF_TILE(T_AVX2, tile16_avx2, TILE256_SMALL_BODY, 1)
DEF_TILE(T_AVX2, tile16_avx2, TILE256_SMALL_BODY, 2)
DEF_TILE(T_AVX2, tile16_avx2, TILE256_BODY, 3)
DEF_TILE(T_AVX2, tile16_avx2, TILE256_BODY, 4)
DEF_TILE(T_AVX2, tile16_avx2, TILE256_BODY, 5)
DEF_TILE(T_AVX2, tile16_avx2, TILE256_BODY, 6)
#undef DOT
#define DOT(acc, a, w) ({ __m256i acc_ = (acc); \
    __asm__("%{vex%} vpdpwssd %2, %1, %0" : "+x"(acc_) : "x"(a), "x"(w)); acc_; })
DEF_TILE(T_AVXVNNI, tile16_avxvnni, TILE256_SMALL_BODY, 1)
DEF_TILE(T_AVXVNNI, tile16_avxvnni, TILE256_SMALL_BODY, 2)
DEF_TILE(T_AVXVNNI, tile16_avxvnni, TILE256_BODY, 3)
DEF_TILE(T_AVXVNNI, tile16_avxvnni, TILE256_BODY, 4)
DEF_TILE(T_AVXVNNI, tile16_avxvnni, TILE256_BODY, 5)
DEF_TILE(T_AVXVNNI, tile16_avxvnni, TILE256_BODY, 6)
#undef DOT

#define TILE_SWITCH6(fn)                                                               \
    switch (mr) {                                                                      \
    case 1: CALL(fn, 1) case 2: CALL(fn, 2) case 3: CALL(fn, 3) case 4: CALL(fn, 4)    \
    case 5: CALL(fn, 5) default: CALL(fn, 6)                                           \
    }

static T_AVX2 void tile16_avx2(int mr, TILE_ARGS) { TILE_SWITCH6(tile16_avx2) }
static T_AVXVNNI void tile16_avxvnni(int mr, TILE_ARGS) { TILE_SWITCH6(tile16_avxvnni) }

/* a 32-column panel = two 16-column halves */
static void tile_avx2(int mr, TILE_ARGS)
{
    tile16_avx2(mr, A, lda, Wp, K, C, ldc, ncols, pf);
    if (ncols > 16) tile16_avx2(mr, A, lda, Wp + 32, K, C + 16, ldc, ncols - 16, 0);
}

static void tile_avxvnni(int mr, TILE_ARGS)
{
    tile16_avxvnni(mr, A, lda, Wp, K, C, ldc, ncols, pf);
    if (ncols > 16) tile16_avxvnni(mr, A, lda, Wp + 32, K, C + 16, ldc, ncols - 16, 0);
}

/* ========================================================================= */
/* AMX (Intel Sapphire Rapids and later): int8 tiles, int32 sums              */
/* ========================================================================= */
/* AMX multiplies bytes only (TDPBSSD: s8 x s8, TDPBUSD: u8 x s8, int32 sums
 * that wrap).  An int16 activation is split exactly into its bytes,
 *     a = 256 * hi + lo,   hi = a >> 8 (signed, -128..127),  lo = a & 255,
 * so  sum_k a*w = 256 * sum_k hi*w + sum_k lo*w  (mod 2^32): the same int32
 * as every other path.  A tile of 16 rows x 32 columns keeps four int32
 * accumulator tiles (lo and hi sums of two 16-column halves), one tile each
 * of lo and hi activations (16 rows x 64 k) and two of weights.
 *
 * AMX wants the weights as k-quads: the second packed copy, after the pair
 * layout in the same buffer (only on CPUs with AMX: see gemm_i8_packed_size),
 * holds for panel p (32 columns), k block kb (64 values), half h, row r:
 *     amx[p][kb][h][r][c][e] = W[32p + 16h + c][64kb + 4r + e]
 * (16 rows of 64 bytes = one B tile), K padded with zeros to a multiple of 64.
 * The activations are split into two byte matrices (Mq x Kq, padded with
 * zeros) once per call, before the threads start.
 *
 * Linux hands the tile registers to a process only on request
 * (arch_prctl ARCH_REQ_XCOMP_PERM): detect_paths() asks; if it is refused
 * the path is simply not offered. */
#define AMX_KB 64                       /* k values per tile row */
#define AMX_MR 16                       /* rows per tile */
#define AMX_MIN_ROWS 4                  /* auto: fewer rows go to AVX-512 VNNI */
#define AMX_KQ(K) (((K) + AMX_KB - 1) / AMX_KB * AMX_KB)
/* rows [m, m+16) of the split activations x panel p: C rows m..m+rows-1 */
static T_AMX void tile_amx(const uint8_t *lo, const int8_t *hi, int64_t Kq,
                           const int8_t *Bp, int32_t *C, ptrdiff_t ldc, int rows, int ncols)
{
    int32_t acc[4][AMX_MR][16] __attribute__((aligned(64)));
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t kb = 0; kb < Kq / AMX_KB; kb++) {
        const int8_t *b = Bp + kb * 2 * 1024;
        _tile_loadd(4, lo + kb * AMX_KB, Kq);
        _tile_loadd(5, hi + kb * AMX_KB, Kq);
        _tile_loadd(6, b, 64);
        _tile_loadd(7, b + 1024, 64);
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
    }
    _tile_stored(0, acc[0], 64);
    _tile_stored(1, acc[1], 64);
    _tile_stored(2, acc[2], 64);
    _tile_stored(3, acc[3], 64);
    const __mmask16 m0 = ncols >= 16 ? 0xFFFF : (__mmask16)((1u << ncols) - 1);
    const __mmask16 m1 = ncols >= 32 ? 0xFFFF : ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);
    for (int r = 0; r < rows; r++) {
        const __m512i a = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(acc[2][r]), 8),
                                           _mm512_load_si512(acc[0][r]));
        const __m512i b = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(acc[3][r]), 8),
                                           _mm512_load_si512(acc[1][r]));
        _mm512_mask_storeu_epi32((void *)(C + r * ldc), m0, a);
        _mm512_mask_storeu_epi32((void *)(C + r * ldc + 16), m1, b);
    }
}

/* the AMX copy of the weights, after the pair layout */
static void amx_pack(const int8_t *W, int64_t N, int64_t K, int64_t ldw, int8_t *dst)
{
    const int64_t Kq = AMX_KQ(K), P = (N + NR - 1) / NR;
    for (int64_t p = 0; p < P; p++)
        for (int64_t kb = 0; kb < Kq / AMX_KB; kb++)
            for (int h = 0; h < 2; h++)
                for (int r = 0; r < 16; r++)
                    for (int c = 0; c < 16; c++)
                        for (int e = 0; e < 4; e++) {
                            const int64_t n = p * NR + 16 * h + c, k = kb * AMX_KB + 4 * r + e;
                            *dst++ = (n < N && k < K) ? W[n * ldw + k] : 0;
                        }
}

#include <sys/syscall.h>
#include <unistd.h>
#define AMX_XCOMP_PERM 0x1023   /* ARCH_REQ_XCOMP_PERM */
#define AMX_XTILEDATA 18        /* XFEATURE_XTILEDATA */

/* AMX: cpuid (amx-tile, amx-int8), the OS saves the tile state (XCR0 bits 17
   and 18), and Linux lets this process use it */
static int amx_usable(void)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const int amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1;
    if (!amx_tile || !amx_int8) return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & (3u << 17)) != (3u << 17)) return 0;
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, AMX_XCOMP_PERM, AMX_XTILEDATA) == 0;
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------------- */
/* CPU detection: cpuid feature bits + XCR0 (the OS must save ymm/zmm state) */
/* ------------------------------------------------------------------------- */
static int detect_paths(void)
{
    unsigned a, b, c, d;
    int mask = 1 << PATH_PORTABLE;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return mask;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return mask;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    const int ymm_os = (xlo & 0x6) == 0x6;
    const int zmm_os = (xlo & 0xE6) == 0xE6;
    if (!ymm_os) return mask;
    unsigned max_leaf = __get_cpuid_max(0, 0);
    if (max_leaf < 7) return mask;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1,
              avx512vl = (b >> 31) & 1, avx512vnni = (c >> 11) & 1;
    const unsigned leaf7_max_sub = a;
    int avxvnni = 0;
    if (leaf7_max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        avxvnni = (a >> 4) & 1;
    }
    if (avx2) mask |= 1 << PATH_AVX2;
    if (avx2 && avxvnni) mask |= 1 << PATH_AVXVNNI;
    if (zmm_os && avx512f && avx512bw && avx512vl) {
        mask |= 1 << PATH_AVX512BW;
        if (avx512vnni) mask |= 1 << PATH_AVX512VNNI;
        if (avx512vnni && amx_usable()) mask |= 1 << PATH_AMX;
    }
    return mask;
}
#else
static int detect_paths(void) { return 1 << PATH_PORTABLE; }
#endif /* GEMM_X86 */

static int g_paths = -1;

static int paths_mask(void)
{
    int m = __atomic_load_n(&g_paths, __ATOMIC_ACQUIRE);
    if (m < 0) {
        m = detect_paths();
        __atomic_store_n(&g_paths, m, __ATOMIC_RELEASE);
    }
    return m;
}

static int best_path(int mask)
{
    static const int order[] = { PATH_AMX, PATH_AVX512VNNI, PATH_AVX512BW, PATH_AVXVNNI, PATH_AVX2, PATH_PORTABLE };
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (mask & (1 << order[i])) return order[i];
    return PATH_PORTABLE;
}

static int path_tile(int path, tile_fn *fn, int *mr)
{
    switch (path) {
    case PATH_PORTABLE: *fn = tile_portable; *mr = 4; return 0;
#if defined(GEMM_X86)
    case PATH_AVX2: *fn = tile_avx2; *mr = MR256; return 0;
    case PATH_AVX512BW: *fn = tile_bw512; *mr = MR512; return 0;
    case PATH_AVX512VNNI: *fn = tile_vnni512; *mr = MR512; return 0;
    case PATH_AVXVNNI: *fn = tile_avxvnni; *mr = MR256; return 0;
    case PATH_AMX: *fn = NULL; *mr = AMX_MR; return 0;   /* run_block_amx */
#endif
    default: return -1;
    }
}

/* ========================================================================= */
/* Driver: blocking, the split of the work into chunks, and the threads     */
/* ========================================================================= */
typedef struct {
    tile_fn fn;
    int mr;
    int64_t M, N, K, lda, ldc;
    const int16_t *A;
    const int8_t *Wp;
    int32_t *C;
    int nthreads;
    int by_rows;       /* chunks are ranges of row tiles (else ranges of panels) */
    int64_t nchunks;
    /* AMX (fn == NULL): the split activations and the weights' AMX copy */
    int64_t Kq;
    const uint8_t *lo;
    const int8_t *hi, *Wq;
} job_t;

#if defined(GEMM_X86)
/* run_block for AMX: the same blocking, tiles of 16 rows over the split A */
static void run_block_amx(const job_t *j, int64_t m0, int64_t m1, int64_t p0, int64_t p1)
{
    const int64_t Kq = j->Kq;
    int64_t mc = (256 * 1024) / (2 * Kq) / AMX_MR * AMX_MR;
    if (mc < AMX_MR) mc = AMX_MR;
    int64_t pc = (384 * 1024) / (NR * Kq);
    if (pc < 1) pc = 1;
    amx_begin();
    for (int64_t mb = m0; mb < m1; mb += mc) {
        const int64_t me = mb + mc < m1 ? mb + mc : m1;
        for (int64_t pb = p0; pb < p1; pb += pc) {
            const int64_t pe = pb + pc < p1 ? pb + pc : p1;
            for (int64_t m = mb; m < me; m += AMX_MR) {
                const int rows = (int)(me - m < AMX_MR ? me - m : AMX_MR);
                for (int64_t p = pb; p < pe; p++) {
                    const int ncols = (int)(j->N - p * NR < NR ? j->N - p * NR : NR);
                    tile_amx(j->lo + m * Kq, j->hi + m * Kq, Kq, j->Wq + p * Kq * NR,
                             j->C + m * j->ldc + p * NR, j->ldc, rows, ncols);
                }
            }
        }
    }
    amx_end();
}
#endif

/* rows [m0, m1) x panels [p0, p1), blocked for the caches */
static void run_block(const job_t *j, int64_t m0, int64_t m1, int64_t p0, int64_t p1)
{
#if defined(GEMM_X86)
    if (!j->fn) { run_block_amx(j, m0, m1, p0, p1); return; }
#endif
    const int64_t Kp = (j->K + 1) & ~(int64_t)1;
    /* rows per L2 block: ~256 KiB of A, a multiple of the tile height */
    int64_t mc = (256 * 1024) / (2 * Kp) / j->mr * j->mr;
    if (mc < j->mr) mc = j->mr;
    /* panels per chunk: ~384 KiB of packed weights, kept in L2 while every
       tile of the row block runs over them; the tile then writes each of its
       rows as one sequential stream across the chunk (prefetch-friendly) */
    int64_t pc = (384 * 1024) / (NR * Kp);
    if (pc < 1) pc = 1;
    for (int64_t mb = m0; mb < m1; mb += mc) {
        const int64_t me = mb + mc < m1 ? mb + mc : m1;
        for (int64_t pb = p0; pb < p1; pb += pc) {
            const int64_t pe = pb + pc < p1 ? pb + pc : p1;
            for (int64_t m = mb; m < me; m += j->mr) {
                const int rows = (int)(me - m < j->mr ? me - m : j->mr);
                for (int64_t p = pb; p < pe; p++) {
                    const int ncols = (int)(j->N - p * NR < NR ? j->N - p * NR : NR);
                    j->fn(rows, j->A + m * j->lda, j->lda, j->Wp + p * Kp * NR, j->K,
                          j->C + m * j->ldc + p * NR, j->ldc, ncols, m == mb);
                }
            }
        }
    }
}

static void run_chunk(const job_t *j, int64_t c)
{
    const int64_t P = (j->N + NR - 1) / NR;
    if (j->by_rows) {
        const int64_t tiles = (j->M + j->mr - 1) / j->mr;
        const int64_t m0 = tiles * c / j->nchunks * j->mr;
        int64_t m1 = tiles * (c + 1) / j->nchunks * j->mr;
        if (m1 > j->M) m1 = j->M;
        run_block(j, m0, m1, 0, P);
    } else {
        run_block(j, 0, j->M, P * c / j->nchunks, P * (c + 1) / j->nchunks);
    }
}

/* Split into chunks: over N panels, unless there are too few panels to
   balance and enough rows to split instead.  About 4 chunks per thread,
   claimed dynamically, so a descheduled thread (busy machine) delays the
   call by at most one chunk instead of its whole share. */
static void plan_chunks(job_t *j)
{
    const int64_t P = (j->N + NR - 1) / NR;
    const int64_t T = j->nthreads;
    const int64_t tiles = (j->M + j->mr - 1) / j->mr;
    j->by_rows = P < 4 * T && tiles >= 2 * T;
    const int64_t units = j->by_rows ? tiles : P;
    j->nchunks = T == 1 ? 1 : (units < 4 * T ? units : 4 * T);
}

/* The chunks run on the exact kernels' one thread pool (pool.c): chunk c of
   the job is item c of a parallel_for. */
#define MAX_THREADS 256

static double g_min_macs_per_thread = 256.0 * 1024;  /* see gemm_i8() */

static int chunk_item(void *ctx, int64_t c)
{
    run_chunk((const job_t *)ctx, c);
    return 0;
}

static void run_job(job_t *j)
{
    plan_chunks(j);
    (void)parallel_for(j->nchunks, j->nchunks == 1 ? 1 : j->nthreads, chunk_item, j);
}

/* ========================================================================= */
/* Public API                                                                 */
/* ========================================================================= */

/* Bit mask of the paths this CPU supports: bit p set <=> path p usable
   (bit 1 = portable is always set; bit 0 is never set). */
EXPORT int gemm_i8_supported_paths(void) { return paths_mask(); }

/* Testing aid: pretend the CPU lacks some paths (e.g. mask 0x06 = portable +
   AVX2, a Zen 3).  The mask is ANDed with what the CPU has; -1 restores it.
   Returns the new mask.  Not thread-safe against concurrent gemm calls. */
EXPORT int gemm_i8_restrict_paths(int mask)
{
    const int m = (detect_paths() & mask) | (1 << PATH_PORTABLE);
    __atomic_store_n(&g_paths, m, __ATOMIC_RELEASE);
    return m;
}

/* Smallest product (multiply-adds) worth one more thread; default 262144.
   Tests set 0 to force every requested thread to run.  Returns the old value. */
EXPORT double gemm_i8_set_min_work(double macs_per_thread)
{
    const double old = g_min_macs_per_thread;
    g_min_macs_per_thread = macs_per_thread < 0 ? 0 : macs_per_thread;
    return old;
}

/* The path that path=0 (auto) resolves to on this CPU. */
EXPORT int gemm_i8_best_path(void) { return best_path(paths_mask()); }

EXPORT const char *gemm_i8_path_name(int path)
{
    static const char *names[PATH_COUNT] = { "auto", "portable", "avx2", "avx512bw",
                                             "avx512vnni", "avxvnni", "amx" };
    return (path >= 0 && path < PATH_COUNT) ? names[path] : "unknown";
}

#if defined(GEMM_X86)
/* Whether packed buffers carry the AMX copy: the CPU has the path (whatever
   gemm_i8_restrict_paths hides later), decided once per process. */
static int amx_layout(void)
{
    static int has = -1;
    int h = __atomic_load_n(&has, __ATOMIC_ACQUIRE);
    if (h < 0) {
        h = (detect_paths() >> PATH_AMX) & 1;
        __atomic_store_n(&has, h, __ATOMIC_RELEASE);
    }
    return h;
}
#endif

/* for the attention kernels (amx.h): AMX may be used in this process */
int gemm_i8_amx_usable(void)
{
#if defined(GEMM_X86)
    return amx_layout();
#else
    return 0;
#endif
}

static int64_t pair_size(int64_t N, int64_t K)
{
    return (N + NR - 1) / NR * ((K + 1) & ~(int64_t)1) * NR;
}

/* Bytes of the packed buffer for an (N, K) weight matrix: the pair layout,
   and on CPUs with AMX its k-quad copy after it. */
EXPORT int64_t gemm_i8_packed_size(int64_t N, int64_t K)
{
    if (N <= 0 || K <= 0) return GEMM_EINVAL;
#if defined(GEMM_X86)
    if (amx_layout()) return pair_size(N, K) + (N + NR - 1) / NR * AMX_KQ(K) * NR;
#endif
    return pair_size(N, K);
}

/* Pack W (N, K) int8 row-major with row stride ldw into `packed`
   (gemm_i8_packed_size(N, K) bytes, no alignment needed). */
EXPORT int gemm_i8_pack(const int8_t *W, int64_t N, int64_t K, int64_t ldw, int8_t *packed)
{
    if (!W || !packed || N <= 0 || K <= 0 || ldw < K) return GEMM_EINVAL;
    const int64_t Kp = (K + 1) & ~(int64_t)1;
    const int64_t P = (N + NR - 1) / NR;
    for (int64_t p = 0; p < P; p++) {
        int8_t *dst = packed + p * Kp * NR;
        for (int64_t kp = 0; kp < Kp / 2; kp++) {
            for (int j = 0; j < NR; j++) {
                const int64_t n = p * NR + j;
                for (int e = 0; e < 2; e++) {
                    const int64_t k = 2 * kp + e;
                    dst[(kp * NR + j) * 2 + e] = (n < N && k < K) ? W[n * ldw + k] : 0;
                }
            }
        }
    }
#if defined(GEMM_X86)
    if (amx_layout()) amx_pack(W, N, K, ldw, packed + pair_size(N, K));
#endif
    return GEMM_OK;
}

/* C (M, N) = A (M, K) * W^T, exact int32.
   path: 0 auto, 1 portable, 2 avx2, 3 avx512bw, 4 avx512vnni, 5 avxvnni, 6 amx.
   Returns 0, GEMM_EINVAL (-1) for bad arguments, GEMM_EPATH (-2) if the path
   is unknown or not supported by this CPU. */
EXPORT int gemm_i8(int64_t M, int64_t N, int64_t K,
                   const int16_t *A, int64_t lda,
                   const int8_t *packed,
                   int32_t *C, int64_t ldc,
                   int threads, int path)
{
    if (M < 0 || N <= 0 || K <= 0 || lda < K || ldc < N || !A || !packed || !C) return GEMM_EINVAL;
    const int mask = paths_mask();
    if (path == PATH_AUTO) {
        path = best_path(mask);
#if defined(GEMM_X86)
        /* a few rows (decoding) would fill a 16-row tile with padding */
        if (path == PATH_AMX && M < AMX_MIN_ROWS) path = PATH_AVX512VNNI;
#endif
    }
    if (path < 0 || path >= PATH_COUNT || !(mask & (1 << path))) return GEMM_EPATH;
    job_t j;
    if (path_tile(path, &j.fn, &j.mr) != 0) return GEMM_EPATH;
    if (M == 0) return GEMM_OK;
    j.M = M; j.N = N; j.K = K; j.lda = lda; j.ldc = ldc;
    j.A = A; j.Wp = packed; j.C = C;
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    /* tiny products: waking a thread costs more than it saves (the result
       does not depend on the thread count anyway) */
    const double macs = (double)M * (double)N * (double)K;
    const double min_macs = g_min_macs_per_thread;
    if (threads > 1 && macs < (double)threads * min_macs) {
        threads = (int)(macs / min_macs);
        if (threads < 1) threads = 1;
    }
    j.nthreads = threads;
    j.lo = NULL; j.hi = NULL; j.Wq = NULL; j.Kq = 0;
#if defined(GEMM_X86)
    if (path == PATH_AMX) {
        const int64_t Kq = AMX_KQ(K), Mq = (M + AMX_MR - 1) / AMX_MR * AMX_MR;
        uint8_t *split = pool_scratch(SCR_GEMM_SPLIT, (size_t)(2 * Mq * Kq));
        if (!split) return GEMM_ENOMEM;
        amx_split(A, lda, M, K, Mq, Kq, split, (int8_t *)split + Mq * Kq);
        j.Kq = Kq; j.lo = split; j.hi = (const int8_t *)split + Mq * Kq;
        j.Wq = packed + pair_size(N, K);
        run_job(&j);
        return GEMM_OK;
    }
#endif
    run_job(&j);
    return GEMM_OK;
}
