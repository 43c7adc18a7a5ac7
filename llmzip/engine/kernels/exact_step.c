/* A whole stack of transformer layers in one call: the exact engine's decoding step (and
 * any small block of rows) without a Python round trip per kernel.
 *
 * fast.py's FastModel.hidden runs a layer as some ten kernel calls (norm, matrix product,
 * requantisation, RoPE and cache writes, attention, ...) through ctypes; with one row to a
 * step (the decoder of one segment) the calls, their argument checks and the tensors
 * they allocate took ~3 ms of a 17.1 ms step on an Intel Xeon (14.2 ms in one call;
 * docs/results.md). llmzip_ex_layers calls the very same exported kernels in the very
 * same order, with the same thread rules, so it computes the same integers: only the
 * glue moved to C. It takes the rows as one chunk (fast.py calls it for at most
 * ROW_CHUNK rows).
 *
 * The structs mirror kernels.py's ctypes Structures (StepModel, StepLayer, StepCache)
 * field for field.
 */
#include "exact_common.h"
#include "gemm_i8.h"

int llmzip_ex_quant(int M, int K, const int64_t *y, int64_t levels, int16_t *a, int32_t *e,
                    int level, int threads);
int llmzip_ex_rmsnorm(int M, int C, const int64_t *x, const int64_t *gain, int out_frac,
                      int64_t Q, int64_t *y, int level, int threads);
int llmzip_ex_norm_quant(int M, int C, const int64_t *x, const int64_t *gain, int out_frac,
                         int64_t Q, int64_t levels, int16_t *a, int32_t *e, int level,
                         int threads);
int llmzip_ex_requant(int M, int N, const int32_t *acc, const int64_t *mult, int shift,
                      const int32_t *e, int64_t *out, int add, int level, int threads);
int llmzip_ex_glu(int M, int F, const int32_t *acc, const int64_t *mult, int shift,
                  const int32_t *e, const int64_t *tab, int frac, int64_t levels,
                  int16_t *a, int32_t *ea, int level, int threads);
int llmzip_ex_qkv(int M, int H, int K, int D, int64_t *qkv, const int32_t *row_b,
                  const int32_t *row_pos, const int64_t *cos_t, const int64_t *sin_t,
                  int halves, int16_t *q16, int32_t *eq, int8_t *kt, double *ksd,
                  int8_t *vc, double *vsd, int Smax, int64_t A, int zshift,
                  int level, int threads);
int llmzip_ex_qk_norm(int M, int H, int K, int D, int64_t *qkv, const int64_t *qg,
                      const int64_t *kg, int frac, int64_t Q, int threads);
int llmzip_ex_attention(int M, int H, int K, int D, const int16_t *q16, const int32_t *eq,
                        const int32_t *row_b, const int32_t *row_pos, const int8_t *kt,
                        const double *ksd, const int8_t *vc, const double *vsd,
                        int Smax, int window, const int32_t *exp32, int64_t *y,
                        int level, int threads);

/* the model: shapes, fixed-point formats, tables and the thread rules (kernels.py) */
typedef struct {
    int C, H, K, D, F;          /* width, query heads, kv heads, head size, FFN width */
    int gemma;                  /* Gemma 3: q/k norms, post-norms, GELU, rotation halves */
    int level, path;            /* row kernels' SIMD level, matrix products' path */
    int act_frac, res_frac, zshift;   /* ACT_FRAC, RES_FRAC, SCORE_SHIFT */
    int64_t q_width, q_head, att_mult;
    int64_t gemm_par_macs, gemm_par_weights, rows_par_items;
    const int32_t *exp32;       /* 2^-x table */
    const int64_t *act_t;       /* SiLU / GELU table */
} step_model;

enum { LIN_QKV, LIN_O, LIN_GU, LIN_DOWN };

/* one layer: its four matrices (packed), norms, RoPE table and window */
typedef struct {
    const int8_t *w[4]; const int64_t *mult[4]; int64_t levels[4]; int sb[4], n[4], k[4];
    const int64_t *attn_norm, *ffn_norm, *q_norm, *k_norm, *post_attn_norm, *post_ffn_norm;
    int rope, window;           /* rope: which of the call's tables (0 global, 1 local) */
} step_layer;

/* the KV cache: each layer's keys, values and their scales */
typedef struct {
    int8_t **kt; double **ksd; int8_t **vc; double **vsd;
    int Smax;
} step_cache;

static int rows_t(const step_model *m, int threads, int64_t items) {
    return items >= m->rows_par_items ? threads : 1;
}

static int gemm(const step_model *m, const step_layer *L, int which, int M, const int16_t *a,
                int32_t *out, int threads) {
    const int64_t N = L->n[which], K = L->k[which];
    const int par = (int64_t)M * N * K >= m->gemm_par_macs || N * K >= m->gemm_par_weights;
    return gemm_i8(M, N, K, a, K, L->w[which], out, N, par ? threads : 1, m->path);
}

/* xs += the branch output acc (through Gemma's post-norm when there is one), as fast.py's
 * FastModel._residual */
static int residual(const step_model *m, const step_layer *L, int which, int M, int64_t *x,
                    const int32_t *acc, const int32_t *e, const int64_t *post_norm,
                    int64_t *o, int64_t *t, int threads) {
    const int C = m->C, n = L->n[which], tr = rows_t(m, threads, (int64_t)M * n);
    const int sb = L->sb[which];
    if (!post_norm)
        return llmzip_ex_requant(M, n, acc, L->mult[which], sb + m->act_frac - m->res_frac, e,
                                 x, 1, m->level, tr);
    int rc = llmzip_ex_requant(M, n, acc, L->mult[which], sb, e, o, 0, m->level, tr);
    rc |= llmzip_ex_rmsnorm(M, C, o, post_norm, m->res_frac, m->q_width, t, m->level,
                            rows_t(m, threads, (int64_t)M * C));
    for (int64_t i = 0; i < (int64_t)M * C; i++) x[i] += t[i];
    return rc;
}

/* Layers 0 .. n_layer - 1 on the M rows x (M, C) int64 (Q16, updated in place): row i is
 * segment row_b[i] at position row_pos[i] of the cache. cos/sin: each RoPE table's
 * entries from the window's offset on. Returns 0, 2 when out of memory, else a kernel's
 * error. */
EXPORT int llmzip_ex_layers(const step_model *m, const step_layer *layers, int n_layer,
                            const step_cache *cache, const int64_t *const *cos_t,
                            const int64_t *const *sin_t, int M, int64_t *x,
                            const int32_t *row_b, const int32_t *row_pos, int threads) {
    if (M <= 0) return 0;
    const int C = m->C, H = m->H, K = m->K, D = m->D, F = m->F, HD = H * D;
    const int64_t NQKV = (int64_t)(H + 2 * K) * D;
    int64_t wide = C > HD ? C : HD;
    wide = wide > F ? wide : F;
    int64_t accw = NQKV > 2 * F ? NQKV : 2 * F;
    accw = accw > C ? accw : C;
    /* one block: a int16 (M, wide), e, e2 int32 (M), acc int32 (M, accw), q16 int16 (M, HD),
       eq int32 (M, H), qkv int64 (M, NQKV), y int64 (M, HD), o and t int64 (M, C) */
    const size_t n_a = (size_t)M * wide, n_acc = (size_t)M * accw;
    const size_t bytes = 2 * n_a + 8 * (size_t)M + 4 * n_acc + 2 * (size_t)M * HD
                         + 4 * (size_t)M * H + 8 * (size_t)M * NQKV + 8 * (size_t)M * HD
                         + 16 * (size_t)M * C + 64 * 11;   /* 10 takes, each aligned to 64 */
    char *block = malloc(bytes);
    if (!block) return 2;
    char *at = block;
#define TAKE(type, n) ((type *)(at = (char *)(((uintptr_t)at + 63) & ~(uintptr_t)63), \
                                at += sizeof(type) * (n), at - sizeof(type) * (n)))
    int64_t *qkv = TAKE(int64_t, (size_t)M * NQKV), *y = TAKE(int64_t, (size_t)M * HD);
    int64_t *o = TAKE(int64_t, (size_t)M * C), *t = TAKE(int64_t, (size_t)M * C);
    int32_t *acc = TAKE(int32_t, n_acc), *e = TAKE(int32_t, M), *e2 = TAKE(int32_t, M);
    int32_t *eq = TAKE(int32_t, (size_t)M * H);
    int16_t *a = TAKE(int16_t, n_a), *q16 = TAKE(int16_t, (size_t)M * HD);
#undef TAKE
    int rc = 0;
    for (int li = 0; li < n_layer && !rc; li++) {
        const step_layer *L = layers + li;
        const int lv = m->level;
        /* attention: norm, q/k/v, RoPE and the cache writes, attention, o, residual */
        rc |= llmzip_ex_norm_quant(M, C, x, L->attn_norm, m->act_frac, m->q_width,
                                   L->levels[LIN_QKV], a, e, lv, rows_t(m, threads, (int64_t)M * C));
        rc |= gemm(m, L, LIN_QKV, M, a, acc, threads);
        rc |= llmzip_ex_requant(M, (int)NQKV, acc, L->mult[LIN_QKV], L->sb[LIN_QKV], e, qkv, 0,
                                lv, rows_t(m, threads, M * NQKV));
        if (m->gemma)
            rc |= llmzip_ex_qk_norm(M, H, K, D, qkv, L->q_norm, L->k_norm, m->act_frac,
                                    m->q_head, rows_t(m, threads, M * NQKV));
        rc |= llmzip_ex_qkv(M, H, K, D, qkv, row_b, row_pos, cos_t[L->rope], sin_t[L->rope],
                            m->gemma, q16, eq, cache->kt[li], cache->ksd[li], cache->vc[li],
                            cache->vsd[li], cache->Smax, m->att_mult, m->zshift, lv,
                            rows_t(m, threads, M * NQKV));
        rc |= llmzip_ex_attention(M, H, K, D, q16, eq, row_b, row_pos, cache->kt[li],
                                  cache->ksd[li], cache->vc[li], cache->vsd[li], cache->Smax,
                                  L->window, m->exp32, y, lv, threads);
        rc |= llmzip_ex_quant(M, HD, y, L->levels[LIN_O], a, e, lv,
                              rows_t(m, threads, (int64_t)M * HD));
        rc |= gemm(m, L, LIN_O, M, a, acc, threads);
        rc |= residual(m, L, LIN_O, M, x, acc, e, m->gemma ? L->post_attn_norm : NULL, o, t,
                       threads);
        /* feed-forward: norm, gate and up, GLU, down, residual */
        rc |= llmzip_ex_norm_quant(M, C, x, L->ffn_norm, m->act_frac, m->q_width,
                                   L->levels[LIN_GU], a, e, lv, rows_t(m, threads, (int64_t)M * C));
        rc |= gemm(m, L, LIN_GU, M, a, acc, threads);
        rc |= llmzip_ex_glu(M, F, acc, L->mult[LIN_GU], L->sb[LIN_GU], e, m->act_t, m->act_frac,
                            L->levels[LIN_DOWN], a, e2, lv, rows_t(m, threads, (int64_t)M * F));
        rc |= gemm(m, L, LIN_DOWN, M, a, acc, threads);
        rc |= residual(m, L, LIN_DOWN, M, x, acc, e2, m->gemma ? L->post_ffn_norm : NULL, o, t,
                       threads);
    }
    free(block);
    return rc;
}
