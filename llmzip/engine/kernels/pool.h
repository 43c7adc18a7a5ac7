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

#endif
