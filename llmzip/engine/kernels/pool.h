/* pool.h -- the one thread pool of the exact engine's kernels (see pool.c) */
#ifndef LLMZIP_POOL_H
#define LLMZIP_POOL_H
#include <stdint.h>

/* One item of a parallel loop: returns 0, or an error code (OR-ed into parallel_for's) */
typedef int (*pool_fn)(void *ctx, int64_t item);

/* fn(ctx, i) for every i in [0, n) on up to `threads` threads (the caller is one of them),
 * items handed out one at a time as threads become free; returns when all are done, with
 * the OR of fn's return values (0: every item succeeded). Which thread runs an item never
 * matters: a caller's items must be independent. fn must not call parallel_for. */
int parallel_for(int64_t n, int threads, pool_fn fn, void *ctx);

/* Scratch memory of the calling thread: at least `bytes`, 64-byte aligned, contents
 * undefined, kept for the thread's next use of the same slot (so a kernel that needs a
 * large buffer per work item does not map fresh pages every time: freed blocks above
 * malloc's mmap threshold went back to the kernel, and clearing the pages again took 6%
 * of a compress). NULL when out of memory. Two buffers in use at once need two slots. */
#include <stddef.h>
enum { SCR_GEMM_SPLIT, SCR_DOTS_Q, SCR_DOTS_K, SCR_DOTS_C, SCR_VALS_W, SCR_VALS_V,
       SCR_VALS_C, SCR_ATT_Q, SCR_ATT_DOT, SCR_ATT_P, SCR_ATT_ZE, SCR_ATT_SIGMA,
       SCR_ATT_ACC, SCR_SPLIT, SCR_SPLIT_W, SCR_TABLE_L, SCR_TABLE_E, SCR_VNNI_I, SCR_VNNI_W, SCR_VNNI_V, SCR_VNNI_S,
       POOL_SCRATCH_SLOTS };
void *pool_scratch(int slot, size_t bytes);

#endif
