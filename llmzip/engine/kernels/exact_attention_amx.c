/* exact_attention_amx.c -- attention's two matrix products on Intel AMX (level 4).
 *
 * exact_attention.c gives a block of up to 16 consecutive query positions of one segment
 * and one kv head (R = rows x G query heads) to these two kernels; softmax stays there.
 * Both compute exactly the integers of docs/engine.md (the same as every other level):
 *
 *   amx_dots:   dot[r][s] = sum_d q16[r][d] k8[s][d]        (int32, exact: |dot| < 2^31)
 *     q16 is split into bytes, q = 256 hi + lo (hi signed, lo unsigned), and
 *     dot = 256 (hi . k) + (lo . k), each an exact int32 sum of byte products.
 *
 *   amx_values: acc[r][d] = sum_s w[r][s] v8[s][d],  w = p sigma_v   (int64, exact)
 *     w < 2^40 is split into L <= 5 unsigned bytes (L from the block's largest w), and
 *     acc = sum_l 2^(8l) (w_l . v8). Each partial sum is an int32 of at most 65,536
 *     products of at most 255 x 127 in magnitude: below 2^31, exact.
 *
 * Tiles: all eight are 16 rows x 64 bytes (amx.h). Keys come from the cache's tiles of
 * 16 positions ([D/2][16][2] bytes, exact_ops.c) and are rearranged per tile into AMX's
 * k-quad layout ([D/4][16][4]) with one word permutation a row; values ([s][D] bytes)
 * into [s/64][d/16][16][16][4] with one byte permutation per 64 bytes.
 */
#include "exact_common.h"
#include "amx.h"

#define KT 16                       /* key tile: positions (exact_ops.c's layout) */

int amx_dots(int R, int D, const int16_t *q, const int8_t *kt, int t0, int t1, int32_t *dot);
int amx_values(int R, int D, int ns, const int32_t *p, const int64_t *sigma, int64_t wmax,
               const int8_t *v, int nvalid, int64_t *acc);

#ifdef LLMZIP_HAVE_AMX

static inline int64_t up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* dot (R x (t1 - t0) 16, row-major) for the key tiles t0..t1-1 (kt: the (segment, kv
 * head) block of the cache). D % 64 == 0, R <= 128. Returns 1 when out of memory. */
T_AMX int amx_dots(int R, int D, const int16_t *q, const int8_t *kt, int t0, int t1,
                   int32_t *dot) {
    const int Rp = (int)up(R, 16), ld = (t1 - t0) * KT;
    uint8_t *lo = pool_scratch(SCR_DOTS_Q, (size_t)Rp * D * 2);
    int8_t *kb = pool_scratch(SCR_DOTS_K, (size_t)D * KT);
    int32_t *c = pool_scratch(SCR_DOTS_C, 2 * 256 * sizeof(int32_t));
    if (!lo || !kb || !c) return 1;
    int8_t *hi = (int8_t *)lo + (int64_t)Rp * D;
    amx_split(q, D, R, D, Rp, D, lo, hi);           /* rows past R zero */
    /* word l of row r (64 bytes: pair 2r of 16 positions, then pair 2r + 1) -> the
       k-quad layout: position l's pair 2r, then its pair 2r + 1 */
    __m512i idx;
    {
        int16_t ix[32];
        for (int l = 0; l < 16; l++) { ix[2 * l] = (int16_t)l; ix[2 * l + 1] = (int16_t)(16 + l); }
        idx = _mm512_loadu_si512((const void *)ix);
    }
    amx_begin();
    for (int t = t0; t < t1; t++) {
        const int8_t *tile = kt + (int64_t)t * KT * D;
        for (int r = 0; r < D / 4; r++)
            _mm512_store_si512((void *)(kb + r * 64),
                               _mm512_permutexvar_epi16(idx, _mm512_loadu_si512((const void *)(tile + r * 64))));
        for (int g = 0; g < Rp / 16; g++) {
            _tile_zero(0);
            _tile_zero(1);
            for (int s = 0; s < D / 64; s++) {
                _tile_loadd(2, lo + (int64_t)g * 16 * D + s * 64, D);
                _tile_loadd(3, hi + (int64_t)g * 16 * D + s * 64, D);
                _tile_loadd(4, kb + s * 1024, 64);
                _tile_dpbusd(0, 2, 4);
                _tile_dpbssd(1, 3, 4);
            }
            _tile_stored(0, c, 64);
            _tile_stored(1, c + 256, 64);
            for (int r = 0; r < 16 && g * 16 + r < R; r++) {
                __m512i x = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c + 256 + r * 16), 8),
                                             _mm512_load_si512(c + r * 16));
                _mm512_storeu_si512((void *)(dot + (int64_t)(g * 16 + r) * ld + (t - t0) * KT), x);
            }
        }
    }
    amx_end();
    return 0;
}

/* acc (R x D int64) = sum_s p[r][s] sigma[s] v[s][d] over s < ns (p: R x ns int32, 0
 * where a row does not look; sigma: ns values, v: the first nvalid positions' rows of
 * D bytes, the rest read as 0); wmax: an upper bound of every p sigma. D % 32 == 0,
 * R <= 128, ns <= 65536. Returns 1 when out of memory. */
T_AMX int amx_values(int R, int D, int ns, const int32_t *p, const int64_t *sigma, int64_t wmax,
                     const int8_t *v, int nvalid, int64_t *acc) {
    const int Rp = (int)up(R, 16);
    const int64_t nsp = up(ns, 64);
    int L = (bit_length((uint64_t)wmax) + 7) / 8;
    if (L < 1) L = 1;
    uint8_t *w = pool_scratch(SCR_VALS_W, (size_t)L * Rp * nsp);
    int8_t *vb = pool_scratch(SCR_VALS_V, (size_t)nsp * D);
    int32_t *c = pool_scratch(SCR_VALS_C, 4 * 256 * sizeof(int32_t));
    if (!w || !vb || !c) return 1;
    /* the limbs of w: w[l][r][s] = byte l of p[r][s] sigma[s]. Sixteen w at a time (two
       vectors of eight int64): one two-source byte permutation puts byte l of all
       sixteen in the 16-byte lane l (l < 4), a second does byte 4, and each lane is one
       store into its limb's row */
    __m512i t03, t4;
    {
        uint8_t ix[64], iy[64];
        for (int l = 0; l < 4; l++)
            for (int i = 0; i < 16; i++) {
                ix[16 * l + i] = (uint8_t)((i < 8 ? 0 : 64) + 8 * (i % 8) + l);
                iy[16 * l + i] = (uint8_t)((i < 8 ? 0 : 64) + 8 * (i % 8) + 4);
            }
        t03 = _mm512_loadu_si512((const void *)ix);
        t4 = _mm512_loadu_si512((const void *)iy);
    }
    const int64_t lstride = (int64_t)Rp * nsp, body = ns / 16 * 16;
    for (int r = 0; r < Rp; r++) {
        const int32_t *pr = p + (int64_t)r * ns;
        uint8_t *wr = w + (int64_t)r * nsp;
        int64_t s = 0;
        if (r < R)
            for (; s < body; s += 16) {
                const __m512i x0 = _mm512_mullo_epi64(
                    _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(pr + s))),
                    _mm512_loadu_si512((const void *)(sigma + s)));
                const __m512i x1 = _mm512_mullo_epi64(
                    _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(pr + s + 8))),
                    _mm512_loadu_si512((const void *)(sigma + s + 8)));
                const __m512i y = _mm512_permutex2var_epi8(x0, t03, x1);
                _mm_storeu_si128((__m128i *)(wr + s), _mm512_castsi512_si128(y));
                if (L > 1) _mm_storeu_si128((__m128i *)(wr + lstride + s), _mm512_extracti32x4_epi32(y, 1));
                if (L > 2) _mm_storeu_si128((__m128i *)(wr + 2 * lstride + s), _mm512_extracti32x4_epi32(y, 2));
                if (L > 3) _mm_storeu_si128((__m128i *)(wr + 3 * lstride + s), _mm512_extracti32x4_epi32(y, 3));
                if (L > 4)
                    _mm_storeu_si128((__m128i *)(wr + 4 * lstride + s),
                                     _mm512_castsi512_si128(_mm512_permutex2var_epi8(x0, t4, x1)));
            }
        for (; s < nsp; s++) {                     /* the tail, and rows and columns of 0 */
            const int64_t x = r < R && s < ns ? (int64_t)pr[s] * sigma[s] : 0;
            for (int l = 0; l < L; l++) wr[l * lstride + s] = (uint8_t)(x >> (8 * l));
        }
    }
    /* values -> vb[s / 64][d / 16][(s % 64) / 4][d % 16][s % 4] (one B tile a 1 KB block) */
    __m512i idx;
    {
        uint8_t ix[64];
        for (int dd = 0; dd < 16; dd++)
            for (int e = 0; e < 4; e++) ix[4 * dd + e] = (uint8_t)(16 * e + dd);
        idx = _mm512_loadu_si512((const void *)ix);
    }
    for (int64_t s4 = 0; s4 < nsp; s4 += 4) {
        for (int d = 0; d < D; d += 16) {
            __m512i x = _mm512_setzero_si512();
            for (int e = 0; e < 4; e++)
                if (s4 + e < nvalid)
                    x = _mm512_mask_loadu_epi32(x, (__mmask16)(0xF << (4 * e)),
                                                v + (s4 + e) * D + d - 16 * e);
            int8_t *dst = vb + ((s4 / 64) * (D / 16) + d / 16) * 1024 + (s4 % 64) / 4 * 64;
            _mm512_store_si512((void *)dst, _mm512_permutexvar_epi8(idx, x));
        }
    }
    memset(acc, 0, sizeof(int64_t) * (size_t)R * D);
    amx_begin();
    for (int g = 0; g < Rp / 16; g++)
        for (int d = 0; d < D; d += 32) {
            const int db = d / 16;
            for (int l = 0; l < L; l += 2) {
                const int two = l + 1 < L;
                const uint8_t *wa = w + ((int64_t)l * Rp + g * 16) * nsp;
                const uint8_t *wb = w + ((int64_t)(l + 1) * Rp + g * 16) * nsp;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int64_t ch = 0; ch < nsp / 64; ch++) {
                    const int8_t *b = vb + (ch * (D / 16) + db) * 1024;
                    _tile_loadd(4, wa + ch * 64, nsp);
                    _tile_loadd(6, b, 64);
                    _tile_loadd(7, b + 1024, 64);
                    _tile_dpbusd(0, 4, 6);
                    _tile_dpbusd(1, 4, 7);
                    if (two) {
                        _tile_loadd(5, wb + ch * 64, nsp);
                        _tile_dpbusd(2, 5, 6);
                        _tile_dpbusd(3, 5, 7);
                    }
                }
                _tile_stored(0, c, 128);
                _tile_stored(1, c + 16, 128);
                _tile_stored(2, c + 512, 128);
                _tile_stored(3, c + 512 + 16, 128);
                for (int r = 0; r < 16 && g * 16 + r < R; r++) {
                    int64_t *a = acc + (int64_t)(g * 16 + r) * D + d;
                    for (int h = 0; h < 2; h++) {          /* columns d .. d + 15, d + 16 .. */
                        __m512i lo = _mm512_cvtepi32_epi64(_mm256_load_si256((const __m256i *)(c + r * 32 + 8 * h)));
                        __m512i hi = _mm512_cvtepi32_epi64(_mm256_load_si256((const __m256i *)(c + r * 32 + 16 + 8 * h)));
                        __m512i x0 = _mm512_slli_epi64(lo, 8 * l), x1 = _mm512_slli_epi64(hi, 8 * l);
                        if (two) {
                            x0 = _mm512_add_epi64(x0, _mm512_slli_epi64(_mm512_cvtepi32_epi64(
                                _mm256_load_si256((const __m256i *)(c + 512 + r * 32 + 8 * h))), 8 * l + 8));
                            x1 = _mm512_add_epi64(x1, _mm512_slli_epi64(_mm512_cvtepi32_epi64(
                                _mm256_load_si256((const __m256i *)(c + 512 + r * 32 + 16 + 8 * h))), 8 * l + 8));
                        }
                        _mm512_storeu_si512((void *)(a + 8 * h), _mm512_add_epi64(_mm512_loadu_si512((const void *)(a + 8 * h)), x0));
                        _mm512_storeu_si512((void *)(a + 16 + 8 * h), _mm512_add_epi64(_mm512_loadu_si512((const void *)(a + 16 + 8 * h)), x1));
                    }
                }
            }
        }
    amx_end();
    return 0;
}

#else  /* no AMX in this build: never called (llmzip_ex_max_level() is below 4) */
int amx_dots(int R, int D, const int16_t *q, const int8_t *kt, int t0, int t1, int32_t *dot) {
    (void)R; (void)D; (void)q; (void)kt; (void)t0; (void)t1; (void)dot;
    return 1;
}
int amx_values(int R, int D, int ns, const int32_t *p, const int64_t *sigma, int64_t wmax,
               const int8_t *v, int nvalid, int64_t *acc) {
    (void)R; (void)D; (void)ns; (void)p; (void)sigma; (void)wmax; (void)v; (void)nvalid;
    (void)acc;
    return 1;
}
#endif
