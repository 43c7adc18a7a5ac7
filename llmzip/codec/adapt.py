"""Models that learn the file as it is coded, mixed with the LLM in the logit domain.

The exact engine gives integer logits l (Q10 bits) for every position; without
adaptation they become the frequency tables directly. With it, each table is made from

    l'_v = (tau * l_v >> 16) + b_v + sum over match predictions d of w[ctx] [v == d]
           + sum over n-gram contexts of u[ctx] [v seen after it]

and, after the token y is coded, every part takes one step of stochastic gradient descent
on the code length -log2 p_y (p the table, normalised over the whole vocabulary, so the
mixture always sums to one):

  - tau, a temperature (Q16): the LLM is slightly overconfident. A table is
    f_v = 1 + q_v (2^P - V) (every token keeps a floor of 1), so only q moves with tau:
    d/dtau = -(f_y - 1)/f_y (l_y - E_q[l]) (`tau`, llmzip 0.10). llmzip 0.3-0.9's `temper`
    took E over the whole table, floor included; with Gemma's 262,144 tokens the floor
    holds 1.6% of the mass at logits far below the top, which pulled E down and tau up
    (to 2.3 on html: 0.09 bits/byte lost). It is kept to decode their archives.
  - b, an adaptive bias over the vocabulary (one vector for all segments of a chunk):
    d/db_v = p_v - [v == y]. It learns the file's own word frequencies.
  - a match model: where the last MATCH_ORDER tokens occurred before (in any segment of
    the chunk), it predicts the token that followed them there and adds a learned weight
    w[ctx] to that token's logit; ctx is the match length's bucket and how far the LLM
    already ranks the token (d/dw = p_d - [d == y]).
  - token n-grams (orders 1-3, counts shared by the chunk's segments): every token seen
    after the current context gets a learned weight u[order, count bucket, share bucket]
    added to its logit (d/du = sum over its tokens of p_v - [v == y]).

Everything is integer: the tables come from the engine's C kernel (or the reference),
the updates are int64 numpy and Python arithmetic with floor shifts, so the decoder
repeats every step bit for bit on any machine. Where the C kernels build, the passes over
the vocabulary run there (adapt_ops.c; the tempering, the edits, the bias, the table and
the expectation in one call, exact_tables.c's llmzip_ad_table); numpy is the spec. The
parts update once per lockstep step, after all its segments' tokens are coded (in segment
order), on both sides.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..errors import FormatError, UsageError

STATE_FRAC = 30          # b and w are kept in Q(10 + 30) bits; applied as Q10 (floor)
TAU_ONE = 1 << 16        # tau in Q16 as applied; kept in Q32
MATCH_ORDER = 4          # tokens of context a match is looked up by
MATCH_MAX = 64           # match lengths are counted up to this
BIAS_CLAMP = 64 << (10 + STATE_FRAC)          # |b| <= 64 bits
W_CLAMP = 32 << (10 + STATE_FRAC)             # |w| <= 32 bits
LEN_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, MATCH_MAX + 1)   # upper bounds (excl.)
NGRAM_ORDERS = (1, 2, 3)  # token n-gram contexts (tokens before the predicted one)
COUNT_BUCKETS = (2, 3, 5, 9, 17, 33, 65, 1 << 62)  # a context's count N: upper bounds
SHARE_STEPS = 8           # a successor's share n_v / (N + 1), in eighths


@dataclass(frozen=True)
class AdaptConfig:
    """Learning rates of the adaptive parts; 0 switches a part off. Recorded in the
    archive header ("adapt"); every value is an integer so the decoder repeats it."""
    bias: int = 0        # bias step per unit probability, in 2^-16 bits (2837 ~ 0.03 nats)
    temper: int = 0      # llmzip 0.3-0.9's temperature (E over the floored table), in
                         # 2^-32 per bit; kept to decode their archives
    match: int = 0       # match weight step per unit probability, in 2^-16 bits
    ngram: int = 0       # n-gram weight step per unit probability, in 2^-16 bits
    tau: int = 0         # temperature step per bit of (l_y - E_q l), in 2^-32 (0.10)
    dyneval: int = 0     # dynamic evaluation: the engine's learning rate, in 2^-30
                         # (engine/exact/learn.py; not a part of the Adapter)

    @property
    def active(self) -> bool:
        """Whether the Adapter has a part to run (dynamic evaluation is the engine's)."""
        return any(v for k, v in asdict(self).items() if k != "dyneval")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_dict(cls, d, error=FormatError) -> "AdaptConfig":
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - names:
            raise error(f"unknown adaptive models {sorted(set(d) - names) if isinstance(d, dict) else d!r}"
                        f"; this llmzip knows {', '.join(sorted(names))}")
        if any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 31
               for v in d.values()):
            raise error(f"adaptive learning rates must be integers 0..2^31-1, not {d!r}")
        if d.get("temper") and d.get("tau"):
            raise error("one temperature only: tau (llmzip 0.10's) or temper (0.3-0.9's)")
        return cls(**d)

    @classmethod
    def parse(cls, text: str) -> "AdaptConfig":
        """'bias=2837,match=40000' (the command line's --adapt); 'off' or '' for none."""
        if text in ("", "off", "none"):
            return cls()
        d = {}
        for part in text.split(","):
            k, _, v = part.partition("=")
            try:
                d[k.strip()] = int(v)
            except ValueError:
                raise UsageError(f"--adapt wants NAME=INTEGER[,...], not {text!r}") from None
        return cls.from_dict(d, UsageError)


def _bucket(length: int) -> int:
    return next(i for i, b in enumerate(LEN_BUCKETS) if length < b)


def match_step(w: int, step: int, hit: bool, f_d: int, precision: int) -> int:
    """A match weight after one SGD step on the code length, clamped to +-W_CLAMP:
    d/dw = p_d - [d == y], with p_d = f_d 2^-precision from the table (online mode's
    byte mixer uses it too)."""
    return min(max(w + step * (((1 << precision) if hit else 0) - f_d), -W_CLAMP), W_CLAMP)


class MatchModel:
    """Long repeats: the chunk's coded tokens, indexed by their last `order` tokens
    (MATCH_ORDER; online mode's byte mixer uses it over bytes, with a limit)."""

    def __init__(self, n_seg: int, order: int = MATCH_ORDER, limit: int | None = None):
        self.order = order                  # tokens of context a match is looked up by
        self.limit = limit                  # most contexts indexed (None: no limit)
        self.hist: list[list[int]] = [[] for _ in range(n_seg)]   # coded tokens per segment
        self.index: dict = {}               # context tuple -> (segment, index of next token)
        self.ptr: list = [None] * n_seg     # per segment: (segment, index) predicted next
        self.len = [0] * n_seg              # per segment: length of the current match

    def predict(self, seg: int) -> tuple[int, int] | None:
        """(predicted token, match length) for segment seg's next token, or None."""
        p = self.ptr[seg]
        if p is None:
            return None
        return self.hist[p[0]][p[1]], self.len[seg]

    def update(self, seg: int, y: int) -> None:
        h = self.hist[seg]
        p = self.ptr[seg]
        if p is not None and self.hist[p[0]][p[1]] == y:
            self.len[seg] = min(self.len[seg] + 1, MATCH_MAX)
            p = (p[0], p[1] + 1)
        else:
            p = None
        h.append(y)
        n = len(h)
        o = self.order
        if n > o:                           # the context before y now has a known successor
            key = tuple(h[n - 1 - o:n - 1])
            if self.limit is None or len(self.index) < self.limit or key in self.index:
                self.index[key] = (seg, n - 1)
        if p is not None and p[1] >= len(self.hist[p[0]]):
            p = None                        # ran into tokens not coded yet
        if p is None and n >= o:
            q = self.index.get(tuple(h[n - o:]))
            if q is not None and q != (seg, n):
                p = q
                src, k = self.hist[q[0]], 0
                while (k < MATCH_MAX and k < q[1] and k < n
                       and src[q[1] - 1 - k] == h[n - 1 - k]):
                    k += 1
                self.len[seg] = k
        if p is None:
            self.len[seg] = 0
        self.ptr[seg] = p


class NgramModel:
    """Token n-gram counts of the chunk (orders NGRAM_ORDERS, contexts shared by all its
    segments), as log-linear features: every token v seen after the current context gets
    w[order, bucket of N, share of v] added to its logit."""

    def __init__(self, n_seg: int):
        self.hist: list[list[int]] = [[] for _ in range(n_seg)]
        self.counts: list[dict] = [{} for _ in NGRAM_ORDERS]   # ctx -> [N, {v: n_v}]
        self.w = np.zeros((len(NGRAM_ORDERS), len(COUNT_BUCKETS), SHARE_STEPS),
                          dtype=np.int64)                      # Q40 bits

    def features(self, seg: int) -> list:
        """[(order index, count bucket, successors (k,) int64, share buckets (k,))]."""
        h, out = self.hist[seg], []
        for i, o in enumerate(NGRAM_ORDERS):
            if len(h) < o:
                break
            e = self.counts[i].get(tuple(h[len(h) - o:]))
            if e is None:
                continue
            n, succ = e
            vs = np.fromiter(succ.keys(), dtype=np.int64, count=len(succ))
            ns = np.fromiter(succ.values(), dtype=np.int64, count=len(succ))
            out.append((i, _count_bucket(n), vs, (SHARE_STEPS * ns) // (n + 1)))
        return out

    def update(self, seg: int, y: int) -> None:
        h = self.hist[seg]
        for i, o in enumerate(NGRAM_ORDERS):
            if len(h) < o:
                break
            e = self.counts[i].setdefault(tuple(h[len(h) - o:]), [0, {}])
            e[0] += 1
            e[1][y] = e[1].get(y, 0) + 1
        h.append(y)


USE_C = True             # the passes over the vocabulary in C (adapt_ops.c, and the
                         # tables in one call: exact_tables.c's llmzip_ad_table) where it
                         # builds; numpy computes the same integers (tests compare them)
TABLE_LEVEL = None       # llmzip_ad_table's SIMD level (0 plain C, 1 AVX2, 2 AVX-512;
                         # None: the best this CPU runs; tests force each)
_EXP32 = None


def _exp32() -> np.ndarray:
    global _EXP32
    if _EXP32 is None:
        from ..engine.exact.tables import exp2_table
        _EXP32 = exp2_table().astype(np.int32)
    return _EXP32


def _tempered(x: np.ndarray, tau: int) -> np.ndarray:
    """temper()'s values for some logits (int64), tau in Q16 (0: none)."""
    x = x.astype(np.int64)
    return np.clip((x * tau) >> 16, -(1 << 30), 1 << 30) if tau else x


def _ops():
    """The exact kernels' library for adapt_ops.c's passes, or None (numpy)."""
    if not USE_C:
        return None
    from ..engine.exact import kernels
    return kernels.library() if kernels.available() else None


def _centred(logits: np.ndarray, f: np.ndarray, sub: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's largest logit m and sum_v (f_v - sub)(l_v - m), int64 (M,) each (a
    table's entries sum to 2^P, |l - m| < 2^31: below 2^61)."""
    lib = _ops()
    if lib is not None:
        lg = np.ascontiguousarray(logits, dtype=np.int32)
        ff = np.ascontiguousarray(f, dtype=np.int32)
        top, el = np.empty(len(lg), dtype=np.int64), np.empty(len(lg), dtype=np.int64)
        if lib.llmzip_ad_centred(*lg.shape, lg.ctypes.data, ff.ctypes.data, sub,
                                 top.ctypes.data, el.ctypes.data):
            raise ValueError("adapt_ops: bad table sizes")
        return top, el
    l64 = logits.astype(np.int64)
    top = l64.max(axis=1)
    return top, np.einsum("rv,rv->r", f.astype(np.int64) - sub, l64 - top[:, None])


def temper(logits: np.ndarray, tau: int) -> np.ndarray:
    """The tempered logits clamp((l tau) >> 16, +-2^30), int32 (M, V), tau in Q16."""
    lib = _ops()
    if lib is not None:
        lg = np.ascontiguousarray(logits, dtype=np.int32)
        out = np.empty_like(lg)
        if lib.llmzip_ad_temper(lg.size, lg.ctypes.data, tau, out.ctypes.data):
            raise ValueError("adapt_ops: temperature out of range")
        return out
    return _tempered(logits, tau).astype(np.int32)


def bias_step(b: np.ndarray, b32: np.ndarray, f: np.ndarray, symbols: np.ndarray, P: int,
              step: int) -> None:
    """The adaptive bias's step, in place: b += step 2^P per coded token y at y, minus
    step times each entry's sum over the step's tables f (M, V); clamped to +-BIAS_CLAMP;
    b32 = b >> STATE_FRAC, the bias the next tables add."""
    lib = _ops()
    if lib is not None:
        ff = np.ascontiguousarray(f, dtype=np.int32)
        sym = np.ascontiguousarray(symbols, dtype=np.int64)
        if lib.llmzip_ad_bias(*ff.shape, ff.ctypes.data, sym.ctypes.data, len(sym), P,
                              step, BIAS_CLAMP, STATE_FRAC, b.ctypes.data, b32.ctypes.data):
            raise ValueError("adapt_ops: a token outside the vocabulary")
        return
    g = f[0].astype(np.int64) if len(f) == 1 else f.sum(axis=0, dtype=np.int64)
    g *= step
    b -= g
    np.add.at(b, symbols, step << P)
    np.clip(b, -BIAS_CLAMP, BIAS_CLAMP, out=b)
    b32[:] = b >> STATE_FRAC


def tau_gradient(logits: np.ndarray, f: np.ndarray, symbols: np.ndarray, P: int,
                 centred: tuple | None = None) -> int:
    """Minus the code length's derivative in tau, summed over the rows (Q10 bits times
    S = 2^P - V): a table is f_v = 1 + q_v S, and only q moves with tau, so
    g = sum_r floor(((l_y - m) S - sum_v (f_v - 1)(l_v - m)) (f_y - 1) / f_y), m the
    row's largest logit (-d(-log2 p_y)/dtau = g / (1024 S) per row). centred: _centred's
    (m, sum) where already computed (llmzip_ad_table's)."""
    top, el = centred if centred is not None else _centred(logits, f, 1)
    S, g = (1 << P) - f.shape[1], 0
    for r in range(len(symbols)):
        y = int(symbols[r])
        fy = int(f[r, y])
        g += ((int(logits[r, y]) - int(top[r])) * S - int(el[r])) * (fy - 1) // fy
    return g


def temper_gradient(logits: np.ndarray, f: np.ndarray, symbols: np.ndarray, P: int,
                    centred: tuple | None = None) -> int:
    """llmzip 0.3-0.9's temperature gradient (Q10 bits times 2^P), kept to decode their
    archives: its expectation runs over the whole table, the floor of 1 every token keeps
    included, which biases it towards sharper tables as V / 2^P grows."""
    top, el = centred if centred is not None else _centred(logits, f, 0)
    rows = np.arange(len(symbols))
    return int(((logits[rows, symbols].astype(np.int64) - top) * (1 << P) - el).sum())


def _count_bucket(n: int) -> int:
    return next(i for i, b in enumerate(COUNT_BUCKETS) if n < b)


class Adapter:
    """The adaptive parts of one chunk: logits of a lockstep step in, tables out; then
    update(symbols). `table(logits, bias)` is the engine's table function."""

    def __init__(self, cfg: AdaptConfig, n_seg: int, vocab: int, precision: int, table):
        self.cfg, self.V, self.P, self.table = cfg, vocab, precision, table
        self.tau = TAU_ONE << 16                               # Q32
        self.b = np.zeros(vocab, dtype=np.int64) if cfg.bias else None
        self.b32 = np.zeros(vocab, dtype=np.int32) if cfg.bias else None  # b >> STATE_FRAC
        self.match = MatchModel(n_seg) if cfg.match else None
        self.ngram = NgramModel(n_seg) if cfg.ngram else None
        self.w = np.zeros((len(LEN_BUCKETS), 3), dtype=np.int64)   # Q40 bits
        self._step = None
        self.seconds = 0.0                  # time spent here (for the benchmarks)
        self.table_seconds = 0.0            # of it, making the tables from the final logits
                                            # (the engine's own work without adaptation)

    def tables(self, live: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Frequency tables (len(live), V) int32 for the segments `live` at this step."""
        lib = _ops()
        if lib is not None:
            return self._tables_c(lib, live, logits)
        t0 = time.perf_counter()
        cfg = self.cfg
        lg = logits
        if cfg.temper or cfg.tau:
            lg = temper(logits, self.tau >> 16)                # a new int32 array
        preds = []
        if self.match is not None:
            if lg is logits:
                lg = lg.astype(np.int32, copy=True)
            for r, s in enumerate(live):
                m = self.match.predict(int(s))
                if m is None:
                    continue
                d, n = m
                row = lg[r]
                gap = int(row.max()) - int(row[d])
                ctx = (_bucket(n), 0 if gap == 0 else 1 if gap < 4096 else 2)
                row[d] = min(int(row[d]) + int(self.w[ctx] >> STATE_FRAC), 1 << 30)
                preds.append((r, d, ctx))
        grams = []
        if self.ngram is not None:
            # the engine's logits (and tempered ones) lie within +-2^30, so clamping the
            # entries the match and n-gram models moved clamps them all; int32 holds the
            # sums (2^30 + 4 weights of at most 2^15)
            if lg is logits:
                lg = lg.copy()
            w = self.ngram.w >> STATE_FRAC
            for r, s in enumerate(live):
                for i, nb, vs, sh in self.ngram.features(int(s)):
                    lg[r, vs] += w[i, nb, sh]
                    grams.append((r, i, nb, vs, sh))
            for r, vs in [(r, vs) for r, _, _, vs, _ in grams] + [(r, d) for r, d, _ in preds]:
                lg[r, vs] = np.clip(lg[r, vs], -(1 << 30), 1 << 30)
        bias = None if self.b is None else torch.from_numpy(self.b32)
        t1 = time.perf_counter()
        f = self.table(torch.from_numpy(np.ascontiguousarray(lg, dtype=np.int32)), bias,
                       self.P).numpy()
        self.table_seconds += time.perf_counter() - t1
        self._step = (live, logits, f, preds, grams, None)
        self.seconds += time.perf_counter() - t0
        return f

    def _tables_c(self, lib, live: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """tables() in one C call (llmzip_ad_table): the same integers. The match and
        n-gram models' edits are computed here for the entries they touch only, from
        the tempered logits (tempering is monotone, so a row's largest tempered logit
        is its largest logit tempered), and the expectation tau's step needs comes back
        with the tables."""
        t0 = time.perf_counter()
        cfg = self.cfg
        lg = np.ascontiguousarray(logits, dtype=np.int32)
        M, V = lg.shape
        tau = self.tau >> 16 if cfg.temper or cfg.tau else 0
        preds, grams, idx, val = [], [], [], []
        for r, s in enumerate(live):
            s = int(s)
            m = self.match.predict(s) if self.match is not None else None
            feats = self.ngram.features(s) if self.ngram is not None else []
            if m is None and not feats:
                continue
            vs = [x[2] for x in feats] + ([np.array([m[0]])] if m is not None else [])
            uniq = np.unique(np.concatenate(vs))
            cur = _tempered(lg[r, uniq], tau)                   # the entries touched
            if m is not None:
                d, n = m
                j = int(np.searchsorted(uniq, d))
                gap = int(_tempered(lg[r].max(keepdims=True), tau)[0]) - int(cur[j])
                ctx = (_bucket(n), 0 if gap == 0 else 1 if gap < 4096 else 2)
                cur[j] = min(int(cur[j]) + int(self.w[ctx] >> STATE_FRAC), 1 << 30)
                preds.append((r, d, ctx))
            if self.ngram is not None:    # (then the match model's entry is clamped too)
                w = self.ngram.w >> STATE_FRAC
                for i, nb, v, sh in feats:
                    cur[np.searchsorted(uniq, v)] += w[i, nb, sh]
                    grams.append((r, i, nb, v, sh))
                np.clip(cur, -(1 << 30), 1 << 30, out=cur)
            idx.append(uniq + r * V)
            val.append(cur)
        idx = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
        val = (np.concatenate(val) if val else np.zeros(0, dtype=np.int64)).astype(np.int32)
        f = np.empty_like(lg)
        top, el = np.empty(M, dtype=np.int32), np.empty(M, dtype=np.int64)
        level = lib.llmzip_ex_max_level() if TABLE_LEVEL is None else TABLE_LEVEL
        t1 = time.perf_counter()
        rc = lib.llmzip_ad_table(M, V, lg.ctypes.data, tau, idx.ctypes.data, val.ctypes.data,
                                 len(idx), 0 if self.b32 is None else self.b32.ctypes.data,
                                 _exp32().ctypes.data, self.P, 0 if cfg.temper else 1,
                                 f.ctypes.data, top.ctypes.data, el.ctypes.data, level)
        if rc:
            raise MemoryError("llmzip_ad_table") if rc == 2 else ValueError(
                "llmzip_ad_table: bad arguments")
        self.table_seconds += time.perf_counter() - t1
        self._step = (live, lg, f, preds, grams, (top.astype(np.int64), el))
        self.seconds += time.perf_counter() - t0
        return f

    def update(self, symbols: np.ndarray) -> None:
        """One learning step on this step's coded tokens (after tables())."""
        t0 = time.perf_counter()
        live, logits, f, preds, grams, centred = self._step
        cfg, P = self.cfg, self.P
        if cfg.temper or cfg.tau:
            g = (temper_gradient if cfg.temper else tau_gradient)(logits, f, symbols, P,
                                                                  centred)
            self.tau = min(max(self.tau + (((cfg.temper or cfg.tau) * g) >> (10 + P)),
                               1 << 30), 1 << 34)                         # 1/4 .. 4
        if self.b is not None:
            bias_step(self.b, self.b32, f, symbols, P, cfg.bias << (24 - P))
        if self.match is not None:
            step = cfg.match << (24 - P)
            for r, d, ctx in preds:
                self.w[ctx] = match_step(int(self.w[ctx]), step, int(symbols[r]) == d,
                                         int(f[r, d]), P)
            for s, y in zip(live, symbols):
                self.match.update(int(s), int(y))
        if self.ngram is not None:
            step, w = cfg.ngram << (24 - P), self.ngram.w
            for r, i, nb, vs, sh in grams:
                g = (vs == symbols[r]).astype(np.int64) * (1 << P) - f[r, vs]
                np.add.at(w[i, nb], sh, step * g)
            np.clip(w, -W_CLAMP, W_CLAMP, out=w)
            for s, y in zip(live, symbols):
                self.ngram.update(int(s), int(y))
        self.seconds += time.perf_counter() - t0
