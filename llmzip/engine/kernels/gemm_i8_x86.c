/*
 * gemm_i8_x86.c -- gemm_i8's x86 microkernels: AVX-512 (VNNI and BW), AVX2 and
 * AVX-VNNI, and Intel AMX, each compiled for its own instruction set (target
 * attributes, no -march) and called only where gemm_i8.c's detect_paths found it.
 * They read the packed layout described in gemm_i8.c and compute the same exact
 * int32 sums as its portable tile.
 */
#define _GNU_SOURCE            /* syscall() (AMX permission) under -std=c11 */
#include "gemm_i8_tiles.h"

#if defined(GEMM_X86)
#include <immintrin.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "amx.h"

/* ========================================================================= */
/* AVX-512 (VNNI and BW): tile = mr (<= 12) rows x 32 columns                */
/* ========================================================================= */
/* Accumulators are named scalars (c<r>a: columns 0-15, c<r>b: 16-31), one   */
/* X-macro per row, `if (r < mr)` with mr constant after inlining: gcc keeps  */
/* them in registers (arrays of vectors made it spill).                       */
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

T_VNNI512 void gemm_i8_tile_vnni512(int mr, TILE_ARGS) { TILE_SWITCH12(tile_vnni512) }
T_BW512 void gemm_i8_tile_bw512(int mr, TILE_ARGS) { TILE_SWITCH12(tile_bw512) }

/* ========================================================================= */
/* AVX2 / AVX-VNNI (ymm, 16 registers): tile = mr (<= 6) rows x 16 columns,  */
/* run twice per 32-column panel (byte offsets 0 and 32 of each k-pair).     */
/* ========================================================================= */

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
void gemm_i8_tile_avx2(int mr, TILE_ARGS)
{
    tile16_avx2(mr, A, lda, Wp, K, C, ldc, ncols, pf);
    if (ncols > 16) tile16_avx2(mr, A, lda, Wp + 32, K, C + 16, ldc, ncols - 16, 0);
}

void gemm_i8_tile_avxvnni(int mr, TILE_ARGS)
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
/* rows [m, m+16) of the split activations x panel p: C rows m..m+rows-1 */
T_AMX void gemm_i8_tile_amx(const uint8_t *lo, const int8_t *hi, int64_t Kq,
                                 const int8_t *Bp, int32_t *C, ptrdiff_t ldc, int rows,
                                 int ncols)
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
void gemm_i8_amx_pack(const int8_t *W, int64_t N, int64_t K, int64_t ldw, int8_t *dst)
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

#define AMX_XCOMP_PERM 0x1023   /* ARCH_REQ_XCOMP_PERM */
#define AMX_XTILEDATA 18        /* XFEATURE_XTILEDATA */

/* AMX: cpuid (amx-tile, amx-int8), the OS saves the tile state (XCR0 bits 17
   and 18), and Linux lets this process use it */
int gemm_i8_amx_permitted(void)
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

#endif /* GEMM_X86 */
