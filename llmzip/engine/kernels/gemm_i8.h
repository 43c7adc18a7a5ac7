/* gemm_i8.h -- exact int16 x int8 -> int32 GEMM (see gemm_i8.c, RESULTS.md) */
#ifndef GEMM_I8_H
#define GEMM_I8_H
#include <stdint.h>

#define GEMM_I8_OK 0
#define GEMM_I8_EINVAL (-1)   /* bad argument */
#define GEMM_I8_EPATH (-2)    /* path unknown / not supported by this CPU */
#define GEMM_I8_ENOMEM 2      /* out of memory */

/* paths: 0 auto, 1 portable, 2 avx2, 3 avx512bw, 4 avx512vnni, 5 avxvnni, 6 amx */
int gemm_i8_supported_paths(void);          /* bit p set <=> path p runs here */
int gemm_i8_best_path(void);                /* what path 0 resolves to */
const char *gemm_i8_path_name(int path);
int gemm_i8_restrict_paths(int mask);       /* testing: hide paths; -1 restores */
double gemm_i8_set_min_work(double macs_per_thread);  /* default 262144 */

int64_t gemm_i8_packed_size(int64_t N, int64_t K);   /* bytes */
int gemm_i8_pack(const int8_t *W, int64_t N, int64_t K, int64_t ldw, int8_t *packed);

/* C[m][n] = sum_k A[m][k] * W[n][k]  (exact; wraps mod 2^32 if the caller's
   no-overflow contract is broken, identically on every path) */
int gemm_i8(int64_t M, int64_t N, int64_t K,
            const int16_t *A, int64_t lda,
            const int8_t *packed,
            int32_t *C, int64_t ldc,
            int threads, int path);
#endif
