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
 * Microkernels (one tile = mr rows x one panel, the whole K in registers;
 * the x86 ones in gemm_i8_x86.c, chosen at run time by detect_paths below)
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
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_i8.h"
#include "gemm_i8_tiles.h"
#include "pool.h"
#include "amx.h"
#if defined(GEMM_X86)
#include <cpuid.h>
#endif

#define EXPORT __attribute__((visibility("default")))

enum {
    GEMM_OK = 0,
    GEMM_EINVAL = -1,      /* bad argument */
    GEMM_EPATH = -2,       /* path unknown or not supported by this CPU */
    GEMM_ENOMEM = 2,       /* out of memory (the AMX path's split activations) */
};
enum { PATH_AUTO = 0, PATH_PORTABLE = 1, PATH_AVX2 = 2, PATH_AVX512BW = 3,
       PATH_AVX512VNNI = 4, PATH_AVXVNNI = 5, PATH_AMX = 6, PATH_COUNT = 7 };

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
        if (avx512vnni && gemm_i8_amx_permitted()) mask |= 1 << PATH_AMX;
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
    case PATH_AVX2: *fn = gemm_i8_tile_avx2; *mr = MR256; return 0;
    case PATH_AVX512BW: *fn = gemm_i8_tile_bw512; *mr = MR512; return 0;
    case PATH_AVX512VNNI: *fn = gemm_i8_tile_vnni512; *mr = MR512; return 0;
    case PATH_AVXVNNI: *fn = gemm_i8_tile_avxvnni; *mr = MR256; return 0;
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
                    gemm_i8_tile_amx(j->lo + m * Kq, j->hi + m * Kq, Kq, j->Wq + p * Kq * NR,
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
    if (amx_layout()) gemm_i8_amx_pack(W, N, K, ldw, packed + pair_size(N, K));
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

