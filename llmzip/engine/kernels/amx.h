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
#endif

/* 1 if this process may use AMX (gemm_i8.c); 0 on any other machine or build */
int gemm_i8_amx_usable(void);
#endif
