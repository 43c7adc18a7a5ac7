/* Range coding over integer frequency tables: constriction's queue range coder
 * (constriction 0.5, src/stream/queue.rs: 32-bit words, 64-bit state, 24-bit precision),
 * written again in C so that a symbol costs a sum over its table instead of building a
 * categorical model from float64 probabilities (~0.5 ms per symbol for 49,152 symbols).
 *
 * It produces and reads exactly constriction's words: the tests compare both on random
 * and skewed tables, so archives written by either coder decode with the other.
 *
 * A table row is V int32 frequencies, each >= 1, summing to 2^24; symbol s has the
 * interval [cum_s, cum_s + f_s) with cum_s = sum_{v < s} f_v.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
#define PRECISION 24
#define WORD_BITS 32
#define STATE_BITS 64
#define LOW_LIMIT ((uint64_t)1 << (STATE_BITS - WORD_BITS))

typedef struct {
    uint64_t lower, range;
    int inverted;                 /* the "inverted situation": a carry may still come */
    uint64_t num_inverted;
    uint32_t first_inverted;
    uint32_t *words;
    size_t n, cap;
} enc_t;

typedef struct {
    uint32_t *words;
    size_t n, pos;
    uint64_t lower, range, point;
} dec_t;

static int push(enc_t *e, uint32_t w) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 1024;
        uint32_t *p = realloc(e->words, cap * sizeof(uint32_t));
        if (!p) return 2;
        e->words = p;
        e->cap = cap;
    }
    e->words[e->n++] = w;
    return 0;
}

EXPORT enc_t *llmzip_rc_enc_new(void) {
    enc_t *e = calloc(1, sizeof(enc_t));
    if (e) e->range = UINT64_MAX;
    return e;
}

EXPORT void llmzip_rc_enc_free(enc_t *e) {
    if (e) free(e->words);
    free(e);
}

/* cum = sum of row[0..s), using 64-bit sums of 32-bit values (vectorises) */
static inline uint64_t prefix(const int32_t *row, int64_t s) {
    uint64_t c = 0;
    for (int64_t v = 0; v < s; v++) c += (uint32_t)row[v];
    return c;
}

static int encode_one(enc_t *e, uint64_t cum, uint64_t prob) {
    uint64_t scale = e->range >> PRECISION;
    e->range = scale * prob;
    if (e->range == 0) return 1;
    uint64_t new_lower = e->lower + scale * cum;
    if (e->inverted && new_lower + e->range > new_lower) {      /* inverted -> normal */
        uint32_t first, rest;
        if (new_lower < e->lower) { first = e->first_inverted + 1; rest = 0; }
        else { first = e->first_inverted; rest = UINT32_MAX; }
        if (push(e, first)) return 2;
        for (uint64_t i = 1; i < e->num_inverted; i++) if (push(e, rest)) return 2;
        e->inverted = 0;
    }
    e->lower = new_lower;
    if (e->range < LOW_LIMIT) {
        e->range <<= WORD_BITS;
        uint32_t lower_word = (uint32_t)(e->lower >> (STATE_BITS - WORD_BITS));
        e->lower <<= WORD_BITS;
        if (e->inverted) {
            e->num_inverted++;
        } else if (e->lower + e->range > e->lower) {
            if (push(e, lower_word)) return 2;
        } else {
            e->inverted = 1;
            e->num_inverted = 1;
            e->first_inverted = lower_word;
        }
    }
    return 0;
}

/* Code symbols[i] with table row i (row stride ld int32s). 0 ok, 1 impossible symbol
 * (frequency 0 or index out of range), 2 out of memory. */
EXPORT int llmzip_rc_encode(enc_t *e, int64_t n, int64_t V, const int32_t *freqs,
                            int64_t ld, const int64_t *symbols) {
    for (int64_t i = 0; i < n; i++) {
        int64_t s = symbols[i];
        if (s < 0 || s >= V) return 1;
        const int32_t *row = freqs + i * ld;
        int rc = encode_one(e, prefix(row, s), (uint32_t)row[s]);
        if (rc) return rc;
    }
    return 0;
}

/* Seal (constriction's iter_seal) and return the number of words; words stay in e. */
EXPORT int64_t llmzip_rc_enc_finish(enc_t *e) {
    if (e->range == UINT64_MAX) return (int64_t)e->n;          /* nothing encoded */
    uint64_t point = e->lower + (LOW_LIMIT - 1);
    if (e->inverted) {
        uint32_t first, rest;
        if (point >= e->lower) { first = e->first_inverted; rest = UINT32_MAX; }
        else { first = e->first_inverted + 1; rest = 0; }
        if (push(e, first)) return -2;
        for (uint64_t i = 1; i < e->num_inverted; i++) if (push(e, rest)) return -2;
    }
    uint32_t point_word = (uint32_t)(point >> (STATE_BITS - WORD_BITS));
    uint32_t upper_word = (uint32_t)((e->lower + e->range) >> (STATE_BITS - WORD_BITS));
    if (push(e, point_word)) return -2;
    if (upper_word == point_word && push(e, 0)) return -2;
    e->range = UINT64_MAX;          /* sealed: a second call adds nothing */
    e->inverted = 0;
    return (int64_t)e->n;
}

EXPORT const uint32_t *llmzip_rc_enc_words(enc_t *e) { return e->words; }

EXPORT dec_t *llmzip_rc_dec_new(const uint32_t *words, int64_t n) {
    dec_t *d = calloc(1, sizeof(dec_t));
    if (!d) return NULL;
    d->words = malloc((n ? n : 1) * sizeof(uint32_t));
    if (!d->words) { free(d); return NULL; }
    memcpy(d->words, words, n * sizeof(uint32_t));
    d->n = n;
    d->range = UINT64_MAX;
    int got = 0;                                   /* read_point */
    while (got < 2 && d->pos < d->n) { d->point = (d->point << WORD_BITS) | d->words[d->pos++]; got++; }
    if (got == 1) d->point <<= WORD_BITS;
    return d;
}

EXPORT void llmzip_rc_dec_free(dec_t *d) {
    if (d) free(d->words);
    free(d);
}

/* Decode one symbol per table row into out. 0 ok, 1 invalid data. */
EXPORT int llmzip_rc_decode(dec_t *d, int64_t n, int64_t V, const int32_t *freqs, int64_t ld,
                            int64_t *out) {
    for (int64_t i = 0; i < n; i++) {
        const int32_t *row = freqs + i * ld;
        uint64_t scale = d->range >> PRECISION;
        uint64_t quantile = (d->point - d->lower) / scale;
        if (quantile >= ((uint64_t)1 << PRECISION)) return 1;
        uint64_t cum = 0;
        int64_t s = 0;
        for (; s + 64 <= V; s += 64) {              /* skip whole blocks of 64 ... */
            uint64_t b = 0;
            for (int j = 0; j < 64; j++) b += (uint32_t)row[s + j];
            if (quantile < cum + b) break;
            cum += b;
        }
        for (; s < V; s++) {                        /* ... then the symbol that holds it */
            uint64_t f = (uint32_t)row[s];
            if (quantile < cum + f) break;
            cum += f;
        }
        if (s == V) return 1;                       /* table sums to less than 2^24 */
        uint64_t prob = (uint32_t)row[s];
        d->lower += scale * cum;
        d->range = scale * prob;
        if (d->range == 0) return 1;
        if (d->range < LOW_LIMIT) {
            d->lower <<= WORD_BITS;
            d->range <<= WORD_BITS;
            d->point <<= WORD_BITS;
            if (d->pos < d->n) d->point |= d->words[d->pos++];
        }
        out[i] = s;
    }
    return 0;
}
