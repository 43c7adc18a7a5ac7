/* amx.h -- what gemm_i8.c and exact_attention_amx.c share to use Intel AMX tiles.
 *
 * Every kernel here configures the eight tile registers the same way (16 rows x 64
 * bytes), multiplies bytes only (TDPBSSD s8 x s8, TDPBUSD u8 x s8, int32 sums that
 * wrap) and releases the tiles when its work item ends. Whether AMX may be used at all
 * (CPU, OS, Linux's per-process permission) is decided once, in gemm_i8.c
 * (gemm_i8_amx_usable); a kernel built here is only ever called after it said yes. */
#ifndef LLMZIP_AMX_H
#define LLMZIP_AMX_H
#if defined(__x86_64__) && !defined(GEMM_I8_NO_X86)
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

#define LLMZIP_HAVE_AMX 1
#define T_AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg_t;

/* Every tile 16 rows x 64 bytes.  Loaded by inline asm with the whole struct as a
   memory operand: gcc 12's _tile_loadconfig names only 8 bytes of it as read, and at
   -O3 the stores into a local config were dropped (the load then faulted). */
static const amx_cfg_t LLMZIP_AMX_CFG = {
    .palette = 1,
    .colsb = { 64, 64, 64, 64, 64, 64, 64, 64 },
    .rows = { 16, 16, 16, 16, 16, 16, 16, 16 },
};

static inline __attribute__((always_inline)) void amx_begin(void)
{
    __asm__ volatile("ldtilecfg %0" : : "m"(LLMZIP_AMX_CFG));
}

static inline __attribute__((always_inline)) void amx_end(void)
{
    __asm__ volatile("tilerelease" ::: "memory");
}

/* A (M, K) int16 -> lo, hi (Mq, Kq) bytes, zero padded: each a = 256 hi + lo exactly
   (lo unsigned, hi signed), the split that lets byte tiles multiply int16 values */
static inline T_AMX void amx_split(const int16_t *A, int64_t lda, int64_t M, int64_t K,
                            int64_t Mq, int64_t Kq, uint8_t *lo, int8_t *hi)
{
    for (int64_t m = 0; m < Mq; m++) {
        uint8_t *l = lo + m * Kq;
        int8_t *h = hi + m * Kq;
        int64_t k = 0;
        if (m < M) {
            const int16_t *a = A + m * lda;
            for (; k + 32 <= K; k += 32) {
                const __m512i v = _mm512_loadu_si512((const void *)(a + k));
                _mm256_storeu_si256((__m256i *)(l + k), _mm512_cvtepi16_epi8(v));
                _mm256_storeu_si256((__m256i *)(h + k), _mm512_cvtepi16_epi8(_mm512_srai_epi16(v, 8)));
            }
            for (; k < K; k++) {
                l[k] = (uint8_t)(a[k] & 255);
                h[k] = (int8_t)(a[k] >> 8);
            }
        }
        memset(l + k, 0, (size_t)(Kq - k));
        memset(h + k, 0, (size_t)(Kq - k));
    }
}
#endif

/* 1 if this process may use AMX (gemm_i8.c); 0 on any other machine or build */
int gemm_i8_amx_usable(void);
#endif
