/* bytecm.c: bitwise context mixing over bytes (paq8/lpaq style), one whole table a step.

Online mode's GPT gives a distribution over the 256 bytes; this mixes it, bit by bit, with
hashed byte-context models, run and match models, and returns the mixture as an integer
frequency table over the 256 bytes for the range coder. Everything is integer arithmetic,
so the decoder, repeating every step, computes the same tables on any machine.

A byte is 8 binary decisions down a tree of 255 nodes (c0 = 1, then c0 = 2 c0 + bit). At
each node every model gives a probability of a 1 (12 bits), stretched to the logistic
domain st(p) = ln(p / (1 - p)) (8 fractional bits, |st| <= 2047; lpaq1's integer
squash/stretch tables). The inputs (n_in of them, by version):

  - 13 hashed contexts (15 from version 2, 16 from 3, 21 from 4): orders 0..6 and 8 of
    the stream's bytes, the current word (or the byte before when between words), the word and the
    previous one, the word and the one before that, the 2 bytes before the last, the
    column (counted up to 24; 63 from version 3) with the line's first byte; version 2
    adds the byte the match model expects with the match's length (or the byte before
    when there is no match) and the word with the two before it; version 3 adds the
    text's layout: in a paragraph's first line, the byte at this column of the first line
    two paragraphs back, whether this line has matched that one so far, and the column (a
    dialogue's speakers alternate); once it has not, the latest of the 9 paragraphs
    before whose first line this one still matches (a speaker seen lately), the byte
    there, how far back, the column; elsewhere the byte above (this column of the line
    before) with the byte before; version 4 adds five, the line's progress: the words
    (spaces) in the line so far with the byte before, its syllables (vowel groups) with
    the byte before (where a verse line ends), and the last paragraph's first line (a
    play's speaker) with the current word, with the 2 bytes before, with the word and
    the one before it. Per context and nibble a 64-byte slot of 15 counters
    (p(1) Q22 and a count n, p += (y - p) / (n + 1.5), n <= LIMIT) found by a 32-bit
    check among 4 slots. Each gives 2 inputs: st(p) (0 when never seen) and st of a
    state map that learns p(1) for each (n, p) state of that context's counters
    (indirect modelling; version 2 buckets p by st(p), finer near 0 and 1, where 1 cut p
    into 64 equal steps); version 4 gives a third, p - 1/2 in the linear domain (10
    bits, 0 when never seen);
  - a run per context: the byte last seen there and how often in a row; where it agrees
    with the bits so far, +-st of p(its bit is right) learned per context and run length;
  - a match model: where the last MIN_MATCH bytes occurred before (in any stream), the byte
    that followed predicts each bit, with a strength learned per match length;
  - the GPT: st of its probability of a 1 at this node (its table's subtree sums);
  - a bias.

Three mixers (weights Q16) each give st_k = sum w_i x_i >> 16, with weight sets chosen
by (c0, the GPT's confidence |st_gpt| in 4 buckets), (the longest order seen, the match
state, the GPT's confidence, the byte before's class: newline, letter, space, other; from
version 3 also the layout: not a paragraph's first line, or one that has or has not
matched the first line two paragraphs back),
(the 2 bytes before, the GPT's confidence), and from version 2 (the byte before, c0, the
GPT's confidence); a final mixer per c0 combines the three (four).
Three APM stages (paq's SSE; contexts: c0 with st_gpt in 16 buckets; c0 with the byte
before; c0 with the 2 bytes before, hashed to 12 bits) refine it: p = (p_mix + q1 + q2 +
q3) / 4. Mixers learn by w_i += x_i err lr >> 18 (err = (bit << 12) - p), lr 4x higher
over the first 2^17 bytes.

Since the range coder needs the whole table before the byte is known, the 255 nodes are
predicted from the state at the byte's start (read-only lookups); after the byte, the 8
nodes on its path update (counters, state maps, mixers, APMs) from what they predicted. A
leaf's probability is the product down its path, in Q40 with the remainder kept exact at
every split, then scaled to a table of total 2^P with every entry >= 1.

Versions 1 to 3 (llmzip 0.9's, 0.11's and 0.12's mixers) are kept bit for bit for their
archives: a version's inputs are its own contexts' (numbered by its count of contexts),
so its mixers sum over those alone, with the weights and the sums they always had.

Streams (online mode codes S parts of a piece side by side) have their own history, word,
line and match state; the tables are shared. tables() predicts every live stream from the
same state; update() then applies the streams' bytes in order. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

#define N_CTX 21                      /* hashed contexts (the list above): version 4, */
#define N_CTX_V3 16                   /* ... version 3, */
#define N_CTX_V2 15                   /* ... version 2, */
#define N_CTX_V1 13                   /* ... version 1 */
#define LAST_VERSION 4
#define X_SM nctx                     /* inputs, for a version's nctx contexts: nctx
                                         counters, nctx state maps, */
#define X_MATCH (2 * nctx)            /* the match model, */
#define X_GPT (2 * nctx + 1)          /* the GPT, */
#define X_BIAS (2 * nctx + 2)         /* a bias, */
#define X_RUN (2 * nctx + 3)          /* nctx runs, */
#define X_LIN (3 * nctx + 3)          /* nctx counters' p, linear (version 4) */
#define N_IN (4 * N_CTX + 3)          /* the most inputs (version 4's); a version's own
                                         count, m->n_in, is what its mixers sum over */
#define W_MAX (1 << 22)               /* |mixer weight| <= 64 */
#define RUN_B 16                      /* run length buckets */
#define SM_N 2048                     /* a model's state map: (n, p) buckets */
#define MAX_ORDER 6                   /* contexts 0..6: orders 0..6 (8 is CTX 11) */
#define MIN_MATCH 6                   /* bytes a match is looked up by */
#define M_BUCKETS 32                  /* match length buckets */
#define SETS_B ((MAX_ORDER + 1) * 3 * 4 * 4)  /* mixer B: longest known order x match
                                          state x the GPT's confidence x byte class */
#define LAYOUTS 3                     /* ... x the layout (version 3) */
#define PARAS 10                      /* paragraph starts kept: the current one, 9 before */
#define SETS_C (65536 * 4)            /* mixer C: the 2 bytes before x the GPT's confidence */
#define APM3_N (4096 * 256)           /* APM 3: the 2 bytes before (hashed) x c0 */
#define APM_N 33                      /* APM interpolation points over st in -2048..2048 */
#define CTR_INIT (1u << 31)           /* counter: p(1) Q22 << 10 | n; p = 1/2, n = 0 */
#define LR_BOOST_BYTES (1 << 17)      /* mixers learn up to 4x faster over these first bytes */

typedef struct { uint32_t chk; uint32_t c[15]; } Slot;   /* 64 bytes: one nibble's nodes */

typedef struct {
    int16_t x[N_IN];                  /* inputs, stretched */
    int16_t sa, sb, sc, sd;           /* the mixers' outputs (stretched, clipped; v1: sd 0) */
    int16_t pa, pb, pc, pd;           /* ... squashed, for their updates */
    int16_t pf;                       /* the final mixer's output, squashed */
    int32_t a1, a2, a3;               /* APM entries to update */
    uint16_t setb;                    /* mixer B's weight set */
    uint16_t seta;                    /* mixer A's */
    uint32_t setc, setd;              /* mixer C's and D's (v1: setd unused) */
    int8_t mexp;                      /* match model's expected bit, -1: none */
} Node;

typedef struct {
    int64_t s;                        /* stream */
    uint64_t h[N_CTX];                /* context hashes at the byte's start */
    int mbucket;                      /* match length bucket (when mexp >= 0) */
    int c1, c2;                       /* the bytes before (0 at the start) */
    uint16_t smi[256][N_CTX];         /* state map entries used at node c0 */
    int16_t rb[N_CTX];                /* each context's last byte (-1: none) */
    uint8_t rk[N_CTX];                /* ... its run length bucket */
    Node node[256];                   /* node[c0], c0 = 1..255 */
} Row;

typedef struct {
    uint8_t *hist; int64_t len, cap;  /* the stream's bytes so far */
    uint64_t word, prev_word, prev_word2;  /* hashes of the current and 2 previous words */
    int64_t col; int line0;           /* bytes since the last newline; the line's first byte */
    int64_t mstream, mpos, mlen;      /* match: next predicted byte hist[mpos] of mstream */
    int64_t prev_line;                /* where the line before starts (this one: len - col) */
    int words, syllables;             /* spaces and vowel groups in the line so far */
    uint64_t head, head_now;          /* hashes of the last paragraph's first line (a play's
                                         speaker) and of this one's so far */
    int64_t para[PARAS];              /* where the current paragraph (after a blank line)
                                         and the ones before it start */
} Stream;

typedef struct {
    int64_t S, P;
    Stream *st;
    int v, nctx, n_in;                /* version (1: llmzip 0.9, 2: 0.11, 3: 0.12, 4: 0.13);
                                         its contexts; its mixers' inputs */
    Slot *t[N_CTX]; uint64_t mask;
    uint64_t *mt; uint64_t mt_mask;   /* match table: (stream << 40 | pos) + 1, 0 empty */
    int32_t *wa, *wb, *wc, *wd;       /* mixer weights (1024, SETS_B x LAYOUTS, SETS_C,
                                         SETS_C sets) x n_in; wd: from version 2 */
    int32_t *wf;                      /* the final mixer: (256 sets) x 4 (3 in version 1) */
    uint16_t *apm1, *apm2, *apm3;     /* (4096 | 65536 | APM3_N, APM_N), Q16 */
    uint32_t mctr[M_BUCKETS];         /* match: p(expected bit) counters */
    uint32_t *sm;                     /* (N_CTX, SM_N) counters: p(1) given a counter's state */
    uint32_t *rt; uint64_t rt_mask;   /* (N_CTX, rt_mask + 1) runs: chk 16 | byte 8 | n 8 */
    uint32_t rsm[N_CTX][RUN_B];       /* p(the run's byte's bit) by context and run length */
    int lr, limit, apm_rate;
    int64_t coded;                    /* bytes learned so far */
    Row *rows; int64_t n_rows;
} CM;

/* ---- the logistic domain (lpaq1's tables: integer interpolation, no libm) ---- */

static const int SQ_T[33] = {1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101,
    1546, 2047, 2549, 2994, 3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085,
    4089, 4092, 4093, 4094};
static int16_t STRETCH[4096];

static int squash_raw(int d) {        /* 4096 / (1 + e^(-d/256)), 0..4095 */
    if (d > 2047) return 4095;
    if (d < -2047) return 0;
    int w = d & 127, i = (d >> 7) + 16;
    return (SQ_T[i] * (128 - w) + SQ_T[i + 1] * w + 64) >> 7;
}

static inline int squash(int d) {     /* ... clipped to 1..4095 */
    int p = squash_raw(d);
    return p < 1 ? 1 : p;
}

static void init_stretch(void) {      /* the inverse of squash_raw */
    int pi = 0;
    for (int x = -2047; x <= 2047; x++) {
        int v = squash_raw(x);
        for (int i = pi; i <= v; i++) STRETCH[i] = (int16_t)x;
        pi = v + 1;
    }
    for (int i = pi; i < 4096; i++) STRETCH[i] = 2047;
}

static inline int clip_st(int64_t s) { return s > 2047 ? 2047 : s < -2047 ? -2047 : (int)s; }

/* ---- hashing, counters, slots ---- */

static inline uint64_t hmix(uint64_t a, uint64_t b) {
    uint64_t h = (a ^ (b + 0x632BE59BD9B4E019ull)) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 32;
    return h;
}

static uint32_t RECIP[1024];          /* 2^17 / (2n + 3): the counter's rate 1 / (n + 1.5) */

static inline void ctr_update(uint32_t *c, int y, int limit) {
    uint32_t v = *c;
    int64_t n = v & 1023, p = v >> 10;
    p += (((int64_t)y << 22) - y - p) * RECIP[n] >> 16;
    if (n < limit) n++;
    *c = (uint32_t)(p << 10) | (uint32_t)n;
}

static inline int ctr_st(uint32_t c) {        /* stretched p, 0 when never updated */
    return (c & 1023) ? STRETCH[c >> 20] : 0;
}

static Slot *find(Slot *t, uint64_t mask, uint64_t h, int create) {
    uint32_t chk = (uint32_t)(h >> 32) | 1u;
    Slot *b = t + ((h & mask) & ~(uint64_t)3);
    for (int i = 0; i < 4; i++)
        if (b[i].chk == chk) return &b[i];
    if (!create) return NULL;
    int r = 0; uint32_t best = UINT32_MAX;
    for (int i = 0; i < 4; i++) {             /* replace the least used (empty first) */
        uint32_t pri = b[i].chk ? (b[i].c[0] & 1023) + 1 : 0;
        if (pri < best) { best = pri; r = i; }
    }
    b[r].chk = chk;
    for (int j = 0; j < 15; j++) b[r].c[j] = CTR_INIT;
    return &b[r];
}

static inline uint64_t nibble_hash(uint64_t h, int c0) {  /* slot of node c0's nibble */
    return c0 < 16 ? h : hmix(h, 16 + ((c0 >> (31 - __builtin_clz(c0) - 4)) & 15));
}

static inline int nibble_node(int c0) {   /* 0..14: node inside its nibble's slot */
    if (c0 < 16) return c0 - 1;
    int k = 31 - __builtin_clz(c0) - 4;   /* bits of the second nibble known */
    return ((1 << k) | (c0 & ((1 << k) - 1))) - 1;
}

static inline int mbucket(int64_t len) {
    return len < 16 ? (int)len : 16 + (int)((len - 16) >> 3 < 15 ? (len - 16) >> 3 : 15);
}

/* ---- life cycle ---- */

EXPORT void llmzip_cm_free(CM *m) {
    if (!m) return;
    if (m->st) for (int64_t s = 0; s < m->S; s++) free(m->st[s].hist);
    free(m->st);
    for (int i = 0; i < N_CTX; i++) free(m->t[i]);
    free(m->sm); free(m->rt); free(m->mt); free(m->rows);
    free(m->wa); free(m->wb); free(m->wc); free(m->wd); free(m->wf);
    free(m->apm1); free(m->apm2); free(m->apm3);
    free(m);
}

/* Version v (1..3) of the mixer: S streams of at most stream_len bytes each, tables
   2^log_slots slots a model; lr: the mixers' rate; limit: the counters' largest n; P: the
   tables' total is 2^P. */
EXPORT CM *llmzip_cm_new(int64_t v, int64_t S, int64_t stream_len, int64_t log_slots,
                          int64_t lr, int64_t limit, int64_t apm_rate, int64_t P) {
    if (v < 1 || v > LAST_VERSION || S < 1 || stream_len < 1 || log_slots < 4
        || log_slots > 26 || limit < 1 || limit > 1023 || apm_rate < 1 || apm_rate > 15
        || P < 16 || P > 30)
        return NULL;
    init_stretch();
    for (int n = 0; n < 1024; n++) RECIP[n] = (uint32_t)((1u << 17) / (2 * n + 3));
    CM *m = calloc(1, sizeof(CM));
    if (!m) return NULL;
    m->v = (int)v;
    const int nctx = v == 1 ? N_CTX_V1 : v == 2 ? N_CTX_V2 : v == 3 ? N_CTX_V3 : N_CTX;
    const int n_in = v >= 4 ? X_LIN + nctx : X_LIN;
    m->nctx = nctx;
    m->n_in = n_in;
    m->S = S; m->P = P; m->lr = (int)lr; m->limit = (int)limit; m->apm_rate = (int)apm_rate;
    m->mask = ((uint64_t)1 << log_slots) - 1;
    m->mt_mask = ((uint64_t)1 << (log_slots + 2)) - 1;
    m->st = calloc((size_t)S, sizeof(Stream));
    m->mt = calloc((size_t)m->mt_mask + 1, sizeof(uint64_t));
    m->wa = malloc(sizeof(int32_t) * 1024 * n_in);
    m->wb = malloc(sizeof(int32_t) * SETS_B * LAYOUTS * n_in);
    m->wc = malloc(sizeof(int32_t) * SETS_C * n_in);
    m->wf = malloc(sizeof(int32_t) * 256 * 4);
    if (v >= 2) m->wd = malloc(sizeof(int32_t) * SETS_C * n_in);
    m->apm1 = malloc(sizeof(uint16_t) * 4096 * APM_N);
    m->apm2 = malloc(sizeof(uint16_t) * 65536 * APM_N);
    m->apm3 = malloc(sizeof(uint16_t) * APM3_N * APM_N);
    m->rows = calloc((size_t)S, sizeof(Row));
    m->sm = malloc(sizeof(uint32_t) * N_CTX * SM_N);
    m->rt_mask = ((uint64_t)1 << (log_slots + 2)) - 1;
    m->rt = calloc((size_t)N_CTX * (m->rt_mask + 1), sizeof(uint32_t));
    int ok = m->sm && m->rt && m->st && m->mt && m->wa && m->wb && m->wc && m->wf
             && m->apm1 && m->apm2 && m->apm3 && m->rows && (v < 2 || m->wd);
    for (int i = 0; i < m->nctx && ok; i++)
        ok = (m->t[i] = calloc((size_t)m->mask + 1, sizeof(Slot))) != NULL;
    for (int64_t s = 0; s < S && ok; s++) {
        m->st[s].cap = stream_len;
        ok = (m->st[s].hist = malloc((size_t)stream_len)) != NULL;
    }
    if (!ok) { llmzip_cm_free(m); return NULL; }
    for (int i = 0; i < 1024 * n_in; i++)     /* start: 1/4 GPT, 1/16 each of the rest */
        m->wa[i] = (i % n_in == X_GPT) ? 16384 : (i % n_in < X_GPT ? 4096 : 0);
    for (int i = 0; i < SETS_B * LAYOUTS * n_in; i++)
        m->wb[i] = m->wa[i];
    for (int k = 0; k < SETS_C / 1024; k++)
        memcpy(m->wc + (size_t)k * 1024 * n_in, m->wa, sizeof(int32_t) * 1024 * n_in);
    if (m->wd) memcpy(m->wd, m->wc, sizeof(int32_t) * SETS_C * n_in);
    for (int i = 0; i < 256 * 4; i++)                /* v1: 3 mixers, the 4th input is 0 */
        m->wf[i] = v == 1 ? 21845 : 16384;
    for (int c = 0; c < 4096 + 65536; c++)           /* APMs: the identity */
        for (int j = 0; j < APM_N; j++) {
            uint16_t v = (uint16_t)(squash((j - 16) * 128) * 16);
            if (c < 4096) m->apm1[c * APM_N + j] = v;
            else m->apm2[(c - 4096) * APM_N + j] = v;
        }
    for (int c = 0; c < APM3_N; c++)
        memcpy(m->apm3 + (size_t)c * APM_N, m->apm1, sizeof(uint16_t) * APM_N);
    for (int b = 0; b < M_BUCKETS; b++) m->mctr[b] = CTR_INIT;
    for (int i = 0; i < N_CTX; i++)
        for (int b = 0; b < RUN_B; b++) m->rsm[i][b] = CTR_INIT;
    for (int i = 0; i < N_CTX * SM_N; i++)           /* state maps: the counter's own p */
        m->sm[i] = v == 1 ? (uint32_t)((i % SM_N) & 63) << 26 | (uint32_t)32 << 20
                          : (uint32_t)squash(((i % SM_N) & 63) * 64 - 2016) << 20;
    return m;
}

/* ---- prediction ---- */

static int same_start(const uint8_t *a, const uint8_t *b, int64_t n) {
    for (int64_t k = 0; k < n; k++)
        if (a[k] != b[k]) return 0;
    return 1;
}

/* Context 15 (version 3): in a paragraph's first line (a speaker's name in a play, a
   record's key), the byte at this column of the first line two paragraphs back, whether
   this line has matched it so far, and the column; where it has not, the latest first
   line of the PARAS - 1 paragraphs before that this one still matches; elsewhere the byte
   above and the byte before. *layout: 0 not a first line, 1 or 2 one that has not or has
   matched the line two paragraphs back (mixer B's weight sets). */
static uint64_t layout_hash(const Stream *st, int c1, int *layout) {
    const uint8_t *h = st->hist;
    int64_t col = st->col, line = st->len - col;
    *layout = 0;
    if (line == st->para[0] && st->para[2] + col < st->para[1]) {
        const uint8_t *a = h + st->para[2], *b = h + line;
        int same = same_start(a, b, col);
        *layout = 1 + same;
        for (int j = 1; j < PARAS && !same && col > 0; j++)
            if (j != 2 && st->para[j] + col < st->para[j - 1]
                && same_start(h + st->para[j], b, col))
                return hmix(1012, (uint64_t)h[st->para[j] + col] << 8
                                  | (uint64_t)(j < 7 ? j : 7) << 5
                                  | (uint64_t)(col < 31 ? col : 31));
        return hmix(1010, (uint64_t)a[col] << 8 | (uint64_t)same << 7
                          | (uint64_t)(col < 31 ? col : 31));
    }
    int above = st->prev_line + col < line ? h[st->prev_line + col] : 256;
    return hmix(1011, (uint64_t)above << 9 | (uint64_t)c1);
}

static inline int apm_p(const uint16_t *t, int st, int32_t *idx) {
    int v = st + 2048, j = v >> 7, w = v & 127;      /* st in -2047..2047: j in 0..31 */
    *idx = j + (w >> 6);
    return (t[j] * (128 - w) + t[j + 1] * w) >> 11;  /* Q16 -> Q12 */
}

static void predict_row(CM *m, Row *r, const int64_t *gpt, int64_t *out) {
    const int nctx = m->nctx, n_in = m->n_in;   /* (X_* name inputs by nctx) */
    Stream *st = &m->st[r->s];
    const uint8_t *h = st->hist;
    int64_t n = st->len;
    /* context hashes */
    uint64_t x = 0;
    r->h[0] = hmix(1000, 0);
    for (int o = 1; o <= MAX_ORDER; o++) {
        x = hmix(x + o, n >= o ? h[n - o] : 256);
        r->h[o] = x;
    }
    int c1 = n ? h[n - 1] : 256;
    r->c1 = c1 & 255;
    r->c2 = (n >= 2 ? h[n - 2] : 0) & 255;
    /* contexts of mixer B (the byte before's class) and APM 3 (the 2 bytes before) */
    int cls = r->c1 == 10 ? 0 : ((r->c1 | 32) >= 'a' && (r->c1 | 32) <= 'z') ? 1
              : r->c1 == ' ' ? 2 : 3;
    int c3 = (int)((hmix(2000, (uint64_t)(n >= 2 ? h[n - 2] : 256) << 9 | c1) & 4095) << 8);
    r->h[MAX_ORDER + 1] = hmix(1001, st->word ? st->word : 0x100000u + (uint64_t)c1);
    r->h[MAX_ORDER + 2] = hmix(hmix(1002, st->word), st->prev_word);
    r->h[MAX_ORDER + 3] = hmix(1003, (uint64_t)(n >= 3 ? h[n - 3] : 256) << 9
                                     | (n >= 2 ? h[n - 2] : 256));
    int64_t ccap = m->v >= 3 ? 63 : 24;   /* the column, counted up to 24 (63 from v3) */
    r->h[MAX_ORDER + 4] = hmix(1004, (uint64_t)(st->col < ccap ? st->col : ccap) << 18
                                     | (uint64_t)st->line0 << 9 | c1);
    uint64_t x8 = x;
    for (int o = MAX_ORDER + 1; o <= 8; o++) x8 = hmix(x8 + o, n >= o ? h[n - o] : 256);
    r->h[MAX_ORDER + 5] = x8;
    r->h[MAX_ORDER + 6] = hmix(hmix(1006, st->word), st->prev_word2);
    /* match */
    int mbyte = -1;
    if (st->mlen > 0 && st->mpos < m->st[st->mstream].len)
        mbyte = m->st[st->mstream].hist[st->mpos];
    r->mbucket = mbyte >= 0 ? mbucket(st->mlen) : 0;
    int mstate = mbyte < 0 ? 0 : st->mlen < 16 ? 1 : 2;
    if (m->v >= 2) {                  /* the byte the match expects, its length; 3 words */
        int64_t ml = st->mlen < 15 ? st->mlen : 15;
        r->h[13] = mbyte >= 0 ? hmix(1007, (uint64_t)mbyte << 8 | (uint64_t)ml)
                              : hmix(1008, (uint64_t)c1);
        r->h[14] = hmix(hmix(hmix(1009, st->word), st->prev_word), st->prev_word2);
    }
    int layout = 0;
    if (m->v >= 3) r->h[15] = layout_hash(st, c1, &layout);
    if (m->v >= 4) {                  /* the line's progress; the paragraph's first line */
        int c2 = n >= 2 ? h[n - 2] : 256;
        uint64_t wc = (uint64_t)(st->words < 15 ? st->words : 15);
        uint64_t sy = (uint64_t)(st->syllables < 31 ? st->syllables : 31);
        r->h[16] = hmix(1013, wc << 9 | (uint64_t)c1);
        uint64_t w = st->word ? st->word : 0x100000u + (uint64_t)c1;
        r->h[17] = hmix(hmix(1014, st->head), w);
        r->h[18] = hmix(1015, sy << 9 | (uint64_t)c1);
        r->h[19] = hmix(hmix(1016, st->head), (uint64_t)c2 << 9 | (uint64_t)c1);
        r->h[20] = hmix(hmix(hmix(1017, st->head), st->word), st->prev_word);
    }
    int mst = STRETCH[m->mctr[r->mbucket] >> 20];
    /* runs: the byte last seen in each context, and how many times in a row */
    for (int i = 0; i < m->nctx; i++) {
        uint32_t e = m->rt[(uint64_t)i * (m->rt_mask + 1) + (r->h[i] & m->rt_mask)];
        int ok = e && (e >> 16) == (uint32_t)(r->h[i] >> 48);
        r->rb[i] = ok ? (int16_t)((e >> 8) & 255) : -1;
        int rn = (int)(e & 255);
        r->rk[i] = (uint8_t)(rn < 8 ? rn : rn < 16 ? 8 + ((rn - 8) >> 1)
                             : rn < 48 ? 12 + ((rn - 16) >> 4) : 15);
    }
    /* slots: one for the first nibble, 16 for the second (read only) */
    Slot *sa[N_CTX], *sb[N_CTX][16];
    for (int i = 0; i < m->nctx; i++) {
        sa[i] = find(m->t[i], m->mask, r->h[i], 0);
        for (int hi = 0; hi < 16; hi++)
            sb[i][hi] = sa[i] ? find(m->t[i], m->mask, hmix(r->h[i], 16 + hi), 0) : NULL;
    }
    /* the GPT's subtree sums */
    int64_t sum[512];
    for (int v = 0; v < 256; v++) sum[256 + v] = gpt[v];
    for (int c = 255; c >= 1; c--) sum[c] = sum[2 * c] + sum[2 * c + 1];
    /* every node */
    uint64_t mass[512];
    mass[1] = (uint64_t)1 << 40;
    for (int c0 = 1; c0 < 256; c0++) {
        Node *nd = &r->node[c0];
        int depth = 31 - __builtin_clz(c0), j = nibble_node(c0), top = 0;
        for (int i = 0; i < m->nctx; i++) {
            Slot *sl = c0 < 16 ? sa[i] : sb[i][(c0 >> (depth - 4)) & 15];
            uint32_t c = sl ? sl->c[j] : CTR_INIT;
            int nb = (int)(c & 1023) < 31 ? (int)(c & 1023) : 31;
            int pb = m->v == 1 ? (int)(c >> 26) : (STRETCH[c >> 20] + 2048) >> 6;
            int smi = i * SM_N + (nb << 6 | pb);   /* (n, p) in v1; (n, st(p)) from v2 */
            r->smi[c0][i] = (uint16_t)(smi - i * SM_N);
            nd->x[i] = (int16_t)ctr_st(c);
            nd->x[X_SM + i] = STRETCH[m->sm[smi] >> 20];
            if (m->v >= 4)            /* p - 1/2, 10 bits; 0 when never seen */
                nd->x[X_LIN + i] = (c & 1023) ? (int16_t)(((int)(c >> 20) - 2048) >> 2) : 0;
            if (i >= 1 && i <= MAX_ORDER && (c & 1023)) top = i;
        }
        nd->mexp = -1;
        nd->x[X_MATCH] = 0;
        if (mbyte >= 0 && ((mbyte | 256) >> (8 - depth)) == c0) {
            nd->mexp = (int8_t)((mbyte >> (7 - depth)) & 1);
            nd->x[X_MATCH] = (int16_t)(nd->mexp ? mst : -mst);
        }
        int64_t p1 = sum[2 * c0 + 1] * 4096 / sum[c0];
        nd->x[X_GPT] = STRETCH[p1 < 1 ? 1 : p1 > 4095 ? 4095 : p1];
        nd->x[X_BIAS] = 256;
        for (int i = 0; i < m->nctx; i++) {
            int rb = r->rb[i], v = 0;
            if (rb >= 0 && ((rb | 256) >> (8 - depth)) == c0) {
                int st1 = STRETCH[m->rsm[i][r->rk[i]] >> 20];
                v = ((rb >> (7 - depth)) & 1) ? st1 : -st1;
            }
            nd->x[X_RUN + i] = (int16_t)v;
        }
        int ga = nd->x[X_GPT] < 0 ? -nd->x[X_GPT] : nd->x[X_GPT];
        int gc = ga < 256 ? 0 : ga < 768 ? 1 : ga < 1536 ? 2 : 3;
        nd->setb = (uint16_t)((((top * 3 + mstate) * 4 + gc) * 4 + cls)
                              * (m->v >= 3 ? LAYOUTS : 1) + layout);
        nd->seta = (uint16_t)(c0 * 4 + gc);
        nd->setc = (uint32_t)((r->c2 << 8 | r->c1) * 4 + gc);
        nd->setd = (uint32_t)((r->c1 << 8 | c0) * 4 + gc);
        const int32_t *wa = m->wa + nd->seta * n_in, *wb = m->wb + nd->setb * n_in,
                      *wc = m->wc + nd->setc * n_in;
        int64_t da = 0, db = 0, dc = 0, dd = 0;
        for (int i = 0; i < n_in; i++) {
            da += (int64_t)nd->x[i] * wa[i];
            db += (int64_t)nd->x[i] * wb[i];
            dc += (int64_t)nd->x[i] * wc[i];
        }
        if (m->wd) {                  /* v2: mixer D by (the byte before, c0, confidence) */
            const int32_t *wd = m->wd + nd->setd * n_in;
            for (int i = 0; i < n_in; i++) dd += (int64_t)nd->x[i] * wd[i];
        }
        nd->sa = (int16_t)clip_st(da >> 16);
        nd->sb = (int16_t)clip_st(db >> 16);
        nd->sc = (int16_t)clip_st(dc >> 16);
        nd->pa = (int16_t)squash(nd->sa);
        nd->pb = (int16_t)squash(nd->sb);
        nd->pc = (int16_t)squash(nd->sc);
        nd->sd = (int16_t)clip_st(dd >> 16);
        nd->pd = (int16_t)squash(nd->sd);
        const int32_t *wf = m->wf + c0 * 4;
        int s = clip_st(((int64_t)nd->sa * wf[0] + (int64_t)nd->sb * wf[1]
                         + (int64_t)nd->sc * wf[2] + (int64_t)nd->sd * wf[3]) >> 16);
        nd->pf = (int16_t)squash(s);
        int pm = nd->pf;
        int g16 = (nd->x[X_GPT] + 2048) >> 8;
        int q1 = apm_p(m->apm1 + (c0 * 16 + g16) * APM_N, s, &nd->a1);
        int q2 = apm_p(m->apm2 + ((c1 & 255) << 8 | c0) * APM_N, s, &nd->a2);
        nd->a1 += (c0 * 16 + g16) * APM_N;
        nd->a2 += ((c1 & 255) << 8 | c0) * APM_N;
        int q3 = apm_p(m->apm3 + (size_t)(c3 | c0) * APM_N, s, &nd->a3);
        nd->a3 += (c3 | c0) * APM_N;
        int p = (pm + q1 + q2 + q3 + 2) >> 2;
        p = p < 1 ? 1 : p > 4095 ? 4095 : p;
        uint64_t one = (mass[c0] >> 12) * (uint64_t)p;   /* mass < 2^41: no overflow */
        mass[2 * c0 + 1] = one;
        mass[2 * c0] = mass[c0] - one;
    }
    /* leaves (sum 2^40) -> a table of total 2^P, entries >= 1 */
    int64_t total = 0, big = 0;
    for (int v = 0; v < 256; v++) {
        int64_t f = (int64_t)(mass[256 + v] >> (40 - m->P));
        out[v] = f < 1 ? 1 : f;
        total += out[v];
        if (out[v] > out[big]) big = v;
    }
    out[big] += ((int64_t)1 << m->P) - total;
}

/* Tables (n, 256) int64 of total 2^P for streams live[0..n), given the GPT's tables
   gpt (n, 256) (any positive totals below 2^40). Returns 0, or -1 on bad arguments. */
EXPORT int llmzip_cm_tables(CM *m, const int64_t *live, int64_t n, const int64_t *gpt,
                            int64_t *out) {
    if (n < 0 || n > m->S) return -1;
    for (int64_t r = 0; r < n; r++) {
        if (live[r] < 0 || live[r] >= m->S || m->st[live[r]].len >= m->st[live[r]].cap)
            return -1;
        int64_t tot = 0;
        for (int v = 0; v < 256; v++) {
            if (gpt[r * 256 + v] < 1) return -1;
            tot += gpt[r * 256 + v];
        }
        if (tot >= ((int64_t)1 << 40)) return -1;
    }
    m->n_rows = n;
    for (int64_t r = 0; r < n; r++) {
        m->rows[r].s = live[r];
        predict_row(m, &m->rows[r], gpt + r * 256, out + r * 256);
    }
    return 0;
}

/* ---- learning ---- */

static inline int32_t w_step(int32_t w, int64_t d) {   /* clamped: no overflow */
    int64_t v = w + d;
    return (int32_t)(v > W_MAX ? W_MAX : v < -W_MAX ? -W_MAX : v);
}

static inline void mix_train(int32_t *w, const int16_t *x, int n, int err, int lr) {
    for (int i = 0; i < n; i++)
        w[i] = w_step(w[i], ((int64_t)x[i] * err * lr) >> 18);
}

static inline void apm_update(uint16_t *t, int y, int rate) {
    int g = (y << 16) + (y << rate) - y - y;
    *t = (uint16_t)(*t + ((g - *t) >> rate));
}

static inline int is_vowel(int c) {
    c |= 32;
    return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' || c == 'y';
}

static void update_stream(CM *m, Stream *st, int64_t s, int y) {
    /* match: follow or drop, then index this position and look for a new match */
    if (st->mlen > 0) {
        Stream *ms = &m->st[st->mstream];
        if (st->mpos < ms->len && ms->hist[st->mpos] == y) { st->mlen++; st->mpos++; }
        else st->mlen = 0;
    }
    st->hist[st->len++] = (uint8_t)y;
    int64_t n = st->len;
    if (n >= MIN_MATCH) {
        uint64_t k = 77;
        for (int i = 1; i <= MIN_MATCH; i++) k = hmix(k, st->hist[n - i]);
        uint64_t *e = &m->mt[k & m->mt_mask];
        if (st->mlen == 0 && *e) {
            int64_t cs = (int64_t)((*e - 1) >> 40), cp = (int64_t)((*e - 1) & ((1ull << 40) - 1));
            Stream *cst = &m->st[cs];
            int64_t len = 0;
            while (len < 32 && len < cp && len < n && (cs != s || cp - len - 1 != n - len - 1)
                   && cst->hist[cp - len - 1] == st->hist[n - len - 1])
                len++;
            if (len >= MIN_MATCH) { st->mstream = cs; st->mpos = cp; st->mlen = len; }
        }
        *e = (((uint64_t)s << 40) | (uint64_t)n) + 1;
    }
    if (y == 10) {
        st->prev_line = n - 1 - st->col;              /* the line this newline ends */
        st->col = 0; st->line0 = 256;
        if (n >= 2 && st->hist[n - 2] == 10) {        /* a blank line: a new paragraph */
            memmove(st->para + 1, st->para, (PARAS - 1) * sizeof(int64_t));
            st->para[0] = n;
        }
    }
    else { if (st->col == 0) st->line0 = y; st->col++; }
    /* the line's words and syllables (vowel groups); the paragraph's first line */
    if (y == 10) {
        if (st->head_now) st->head = st->head_now;
        st->head_now = 0; st->words = 0; st->syllables = 0;
    } else {
        if (n - st->col == st->para[0]) st->head_now = hmix(st->head_now + 1, (uint64_t)y);
        if (y == ' ') st->words++;
        if (is_vowel(y) && !(n >= 2 && is_vowel(st->hist[n - 2]))) st->syllables++;
    }
    /* words: letters (case folded) */
    int c = y | 32;
    if (c >= 'a' && c <= 'z') st->word = hmix(st->word, (uint64_t)c);
    else if (st->word) { st->prev_word2 = st->prev_word; st->prev_word = st->word; st->word = 0; }
}

/* The coded bytes sym[0..n) of the rows of the last tables() call, in order. */
EXPORT int llmzip_cm_update(CM *m, const int64_t *sym, int64_t n) {
    const int n_in = m->n_in;
    if (n != m->n_rows) return -1;
    for (int64_t r = 0; r < n; r++)
        if (sym[r] < 0 || sym[r] > 255) return -1;
    for (int64_t r = 0; r < n; r++) {
        Row *row = &m->rows[r];
        int y = (int)sym[r], c0 = 1;
        int64_t left = LR_BOOST_BYTES - m->coded;
        int lr = left > 0 ? m->lr + (int)((3 * m->lr * left) / LR_BOOST_BYTES) : m->lr;
        for (int k = 7; k >= 0; k--) {
            int bit = (y >> k) & 1, j = nibble_node(c0);
            Node *nd = &row->node[c0];
            for (int i = 0; i < m->nctx; i++) {
                Slot *sl = find(m->t[i], m->mask, nibble_hash(row->h[i], c0), 1);
                ctr_update(&sl->c[j], bit, m->limit);
                ctr_update(&m->sm[i * SM_N + row->smi[c0][i]], bit, 1023);
            }
            for (int i = 0; i < m->nctx; i++) {
                int rb = row->rb[i];
                if (rb >= 0 && ((rb | 256) >> (k + 1)) == c0)
                    ctr_update(&m->rsm[i][row->rk[i]], bit == ((rb >> k) & 1), 255);
            }
            if (nd->mexp >= 0)
                ctr_update(&m->mctr[row->mbucket], bit == nd->mexp, 1023);
            mix_train(m->wa + nd->seta * n_in, nd->x, n_in, (bit << 12) - nd->pa, lr);
            mix_train(m->wb + nd->setb * n_in, nd->x, n_in, (bit << 12) - nd->pb, lr);
            mix_train(m->wc + nd->setc * n_in, nd->x, n_in, (bit << 12) - nd->pc, lr);
            if (m->wd)
                mix_train(m->wd + nd->setd * n_in, nd->x, n_in, (bit << 12) - nd->pd, lr);
            const int16_t s4[4] = {nd->sa, nd->sb, nd->sc, nd->sd};
            mix_train(m->wf + c0 * 4, s4, m->wd ? 4 : 3, (bit << 12) - nd->pf, lr);
            apm_update(m->apm1 + nd->a1, bit, m->apm_rate);
            apm_update(m->apm2 + nd->a2, bit, m->apm_rate);
            apm_update(m->apm3 + nd->a3, bit, m->apm_rate);
            c0 = 2 * c0 + bit;
        }
        for (int i = 0; i < m->nctx; i++) {
            uint32_t *e = &m->rt[(uint64_t)i * (m->rt_mask + 1) + (row->h[i] & m->rt_mask)];
            uint32_t chk = (uint32_t)(row->h[i] >> 48);
            if (*e && (*e >> 16) == chk && (int)((*e >> 8) & 255) == y)
                *e += (*e & 255) < 255;
            else
                *e = chk << 16 | (uint32_t)y << 8 | 1;
        }
        update_stream(m, &m->st[row->s], row->s, y);
        m->coded++;
    }
    m->n_rows = 0;
    return 0;
}
