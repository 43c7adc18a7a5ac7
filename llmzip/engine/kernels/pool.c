/*
 * pool.c -- the one thread pool of the exact engine's kernels: the matrix product
 * (gemm_i8.c), the row-wise kernels (exact_ops.c), attention and the frequency tables
 * (exact_attention.c) all run their parallel loops through parallel_for (pool.h).
 *
 * Why one pool.  A forward pass alternates these kernels every few hundred microseconds,
 * so an idle worker spins for a while before it sleeps: the next call wakes it at no cost.
 * With two pools (the GEMM's and OpenMP's, as before) each pool's spinning threads took the
 * CPUs from the other's working threads: on 2 vCPUs the prefill ran 0.88 ms a token, 0.68
 * with OpenMP's spinning turned off (OMP_WAIT_POLICY=PASSIVE, which cannot be set for the
 * process: it slows torch, hence the float engine, as much). One pool's workers only spin
 * while none of its calls runs. It uses pthreads, not OpenMP, so it does not share (or
 * fight over) the OpenMP runtime torch loads.
 *
 * Scheduling.  Items are claimed one at a time from a shared counter (OpenMP's
 * schedule(dynamic, 1)): on a busy machine a descheduled thread delays the call by one item
 * instead of its share. Above MAX_CHUNKS items, consecutive items are claimed in groups
 * (the counter has 16 bits). The results never depend on it: the items of a call are
 * independent (rows, or rows x heads, or ranges of a product's panels).
 *
 * Protocol.  The caller is thread 0; workers 1..T-1 are started on first use and kept.
 * The caller writes the job to g_job, then publishes g_state = (generation, number of
 * chunks, next chunk). Every thread, caller included, claims chunks with a compare-and-swap
 * on g_state; a successful CAS also proves that the copy of g_job read just before it
 * belongs to that generation (g_job is only rewritten once every chunk of the previous job
 * is claimed and done: seqlock-style). The caller returns when every chunk is done. Idle
 * workers spin ~0.3 ms (calls come back to back in a model), then sleep on a condition
 * variable. Calls from several threads are serialised by a lock.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthread_atfork */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include "pool.h"

#define MAX_THREADS 256
#define MAX_CHUNKS 0xFFFF          /* chunks of one call: 16 bits of g_state */
#define SPIN_NS 300000

typedef struct {
    pool_fn fn;
    void *ctx;
    int64_t n;                     /* items */
    int64_t nchunks;               /* claims: n, or MAX_CHUNKS groups of items */
    int nthreads;
} job_t;

static pthread_mutex_t g_call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;   /* for the condvars */
static pthread_cond_t g_cv_start = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_cv_done = PTHREAD_COND_INITIALIZER;
static job_t g_job;
static uint64_t g_state;                   /* generation << 32 | nchunks << 16 | next */
static int64_t g_done;                     /* chunks finished in this generation */
static int g_status;                       /* OR of the items' return values */
static int g_nworkers;                     /* workers started (ids 1..g_nworkers) */
static uint64_t g_start_gen[MAX_THREADS];
static int g_atfork_done;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint64_t state_gen(uint64_t s) { return s >> 32; }
static inline int64_t state_nchunks(uint64_t s) { return (int64_t)((s >> 16) & 0xFFFF); }
static inline int64_t state_next(uint64_t s) { return (int64_t)(s & 0xFFFF); }

/* the items of chunk c, in order; the OR of their return values */
static int run_chunk(const job_t *j, int64_t c)
{
    const int64_t i0 = j->n * c / j->nchunks, i1 = j->n * (c + 1) / j->nchunks;
    int status = 0;
    for (int64_t i = i0; i < i1; i++) status |= j->fn(j->ctx, i);
    return status;
}

/* claim and run chunks of generation gen until none is left; returns 0 if
   this thread is not one the job asked for (id >= nthreads) */
static int work_on(uint64_t gen, int id)
{
    for (;;) {
        uint64_t st = __atomic_load_n(&g_state, __ATOMIC_ACQUIRE);
        if (state_gen(st) != gen) return 1;
        const int64_t idx = state_next(st);
        if (idx >= state_nchunks(st)) return 1;  /* all claimed: g_job may be rewritten */
        job_t j;
        memcpy(&j, &g_job, sizeof j);       /* validated by the CAS below */
        if (id >= j.nthreads) return 0;
        if (!__atomic_compare_exchange_n(&g_state, &st, st + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        const int status = run_chunk(&j, idx);
        if (status) __atomic_fetch_or(&g_status, status, __ATOMIC_RELAXED);
        if (__atomic_add_fetch(&g_done, 1, __ATOMIC_ACQ_REL) == j.nchunks) {
            pthread_mutex_lock(&g_mu);
            pthread_cond_signal(&g_cv_done);
            pthread_mutex_unlock(&g_mu);
        }
    }
}

static void *worker_main(void *arg)
{
    const int id = (int)(intptr_t)arg;
    uint64_t seen = g_start_gen[id];        /* generation when created (call lock held) */
    int spin = 1;                           /* no spinning while calls use fewer threads */
    for (;;) {
        const int64_t t0 = now_ns();
        for (int i = 1; state_gen(__atomic_load_n(&g_state, __ATOMIC_ACQUIRE)) == seen; i++) {
            cpu_relax();
            if (!spin || ((i & 255) == 0 && now_ns() - t0 > SPIN_NS)) {
                pthread_mutex_lock(&g_mu);
                while (state_gen(__atomic_load_n(&g_state, __ATOMIC_ACQUIRE)) == seen)
                    pthread_cond_wait(&g_cv_start, &g_mu);
                pthread_mutex_unlock(&g_mu);
                break;
            }
        }
        seen = state_gen(__atomic_load_n(&g_state, __ATOMIC_ACQUIRE));
        spin = work_on(seen, id);
    }
    return NULL;
}

static void atfork_child(void)
{
    /* the workers do not exist in a forked child: start afresh */
    pthread_mutex_init(&g_call_lock, NULL);
    pthread_mutex_init(&g_mu, NULL);
    pthread_cond_init(&g_cv_start, NULL);
    pthread_cond_init(&g_cv_done, NULL);
    g_nworkers = 0;
}

/* call lock held; returns the number of threads available (>= 1) */
static int ensure_workers(int nthreads)
{
    if (!g_atfork_done) {
        pthread_atfork(NULL, NULL, atfork_child);
        g_atfork_done = 1;
    }
    while (g_nworkers < nthreads - 1) {
        const int id = g_nworkers + 1;
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        g_start_gen[id] = state_gen(__atomic_load_n(&g_state, __ATOMIC_ACQUIRE));
        const int rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_nworkers = id;
    }
    return g_nworkers + 1 < nthreads ? g_nworkers + 1 : nthreads;
}

int parallel_for(int64_t n, int threads, pool_fn fn, void *ctx)
{
    if (n <= 0) return 0;
    job_t j = { fn, ctx, n, n < MAX_CHUNKS ? n : MAX_CHUNKS, threads };
    if (j.nthreads > j.nchunks) j.nthreads = (int)j.nchunks;   /* no idle helpers */
    if (j.nthreads > MAX_THREADS) j.nthreads = MAX_THREADS;
    if (j.nthreads > 1) {
        pthread_mutex_lock(&g_call_lock);
        j.nthreads = ensure_workers(j.nthreads);
        if (j.nthreads == 1) pthread_mutex_unlock(&g_call_lock);  /* no worker could start */
    }
    if (j.nthreads <= 1) {           /* on the caller alone: no lock, no atomics */
        int status = 0;
        for (int64_t i = 0; i < n; i++) status |= fn(ctx, i);
        return status;
    }
    /* publish: every chunk of the previous job is done, nobody reads g_job */
    memcpy(&g_job, &j, sizeof j);
    __atomic_store_n(&g_done, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_status, 0, __ATOMIC_RELAXED);
    const uint64_t gen = (state_gen(__atomic_load_n(&g_state, __ATOMIC_ACQUIRE)) + 1) & 0xFFFFFFFF;
    pthread_mutex_lock(&g_mu);
    __atomic_store_n(&g_state, gen << 32 | (uint64_t)j.nchunks << 16, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&g_cv_start);
    pthread_mutex_unlock(&g_mu);

    (void)work_on(gen, 0);

    const int64_t t0 = now_ns();
    for (int i = 1; __atomic_load_n(&g_done, __ATOMIC_ACQUIRE) != j.nchunks; i++) {
        cpu_relax();
        if ((i & 255) == 0 && now_ns() - t0 > SPIN_NS) {
            pthread_mutex_lock(&g_mu);
            while (__atomic_load_n(&g_done, __ATOMIC_ACQUIRE) != j.nchunks)
                pthread_cond_wait(&g_cv_done, &g_mu);
            pthread_mutex_unlock(&g_mu);
            break;
        }
    }
    const int status = __atomic_load_n(&g_status, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g_call_lock);
    return status;
}

/* ---- per-thread scratch (pool.h) ------------------------------------------------ */
static _Thread_local struct { void *p; size_t n; } t_scratch[POOL_SCRATCH_SLOTS];

void *pool_scratch(int slot, size_t bytes)
{
    if (slot < 0 || slot >= POOL_SCRATCH_SLOTS) return NULL;
    if (bytes > t_scratch[slot].n) {
        const size_t n = (bytes + bytes / 4 + 4095) & ~(size_t)4095;  /* some headroom */
        free(t_scratch[slot].p);
        t_scratch[slot].p = aligned_alloc(64, n);
        t_scratch[slot].n = t_scratch[slot].p ? n : 0;
    }
    return t_scratch[slot].p;
}
