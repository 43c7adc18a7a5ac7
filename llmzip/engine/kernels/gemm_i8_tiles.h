/* gemm_i8_tiles.h -- what gemm_i8.c (the packed layout, the driver, the CPU detection)
 * and gemm_i8_x86.c (the x86 microkernels) share.  Private to the exact kernels'
 * library: built with -fvisibility=hidden, none of these names leave it. */
#ifndef GEMM_I8_TILES_H
#define GEMM_I8_TILES_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* All x86 code sits under GEMM_X86; -DGEMM_I8_NO_X86 builds the portable
   path alone on x86 (what an aarch64 build compiles). */
#if defined(__x86_64__) && !defined(GEMM_I8_NO_X86)
#define GEMM_X86 1
#endif

#define NR 32                   /* output columns per packed panel */

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

#if defined(GEMM_X86)
#define MR512 12                /* rows of an AVX-512 tile (x 32 columns) */
#define MR256 6                 /* rows of an AVX2 / AVX-VNNI tile (x 16 columns, twice) */
#define AMX_KB 64               /* AMX: k values per tile row */
#define AMX_MR 16               /* AMX: rows per tile */
#define AMX_MIN_ROWS 4          /* auto: fewer rows go to AVX-512 VNNI */
#define AMX_KQ(K) (((K) + AMX_KB - 1) / AMX_KB * AMX_KB)

/* the tiles of gemm_i8_x86.c (tile_fn), one per path */
void gemm_i8_tile_vnni512(int mr, const int16_t *A, ptrdiff_t lda, const int8_t *Wp,
                          int64_t K, int32_t *C, ptrdiff_t ldc, int ncols, int pf);
void gemm_i8_tile_bw512(int mr, const int16_t *A, ptrdiff_t lda, const int8_t *Wp,
                        int64_t K, int32_t *C, ptrdiff_t ldc, int ncols, int pf);
void gemm_i8_tile_avx2(int mr, const int16_t *A, ptrdiff_t lda, const int8_t *Wp,
                       int64_t K, int32_t *C, ptrdiff_t ldc, int ncols, int pf);
void gemm_i8_tile_avxvnni(int mr, const int16_t *A, ptrdiff_t lda, const int8_t *Wp,
                          int64_t K, int32_t *C, ptrdiff_t ldc, int ncols, int pf);
/* AMX: rows [m, m+16) of the split activations x one panel of the weights' AMX copy */
void gemm_i8_tile_amx(const uint8_t *lo, const int8_t *hi, int64_t Kq, const int8_t *Bp,
                      int32_t *C, ptrdiff_t ldc, int rows, int ncols);
void gemm_i8_amx_pack(const int8_t *W, int64_t N, int64_t K, int64_t ldw, int8_t *dst);
int gemm_i8_amx_permitted(void);  /* the CPU, the OS and Linux let this process use AMX */
#endif
#endif
