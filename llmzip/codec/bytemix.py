"""Byte context models mixed with online mode's GPT, in integer arithmetic (llmzip 0.5).

Presets use the bitwise context mixer (bytecm.py) since 0.9; this one decodes the archives
whose config has `mixer` 0 or none (llmzip 0.5 .. 0.8).

Online mode trains a small GPT from scratch while it codes: early on it knows nothing, and
a count of what followed each recent context learns much faster. This module mixes the
two (and a match model for long repeats) into one distribution over the 256 bytes:

    z_v = (w_gpt * g_v + w_ctx * c_v) >> 24  +  m [v == d]        (Q10 bits)
    table = the exact engine's frequencies of z (engine/exact/reference.freqs)

  - g = the GPT's logits in Q10 bits (rounded from its float output; online mode's float
    model is bound to the machine anyway), less their maximum.
  - c = log2 of the context models' blended probability (Q10, from an integer log2):
    orders 1..K of byte contexts shared by all streams, each order's counts blended with
    the order below as in interpolated Kneser-Ney,

        p_o(v) = (max(10 n_v - 9, 0) + (9 d + 3) p_{o-1}(v)) / (10 N + 3)

    (absolute discount 0.9, concentration 0.3; N a context's count, d its distinct
    successors; order 0 is the Laplace-smoothed byte counts), in Q32 with floor division.
    Counts are updated with exclusion: a byte counts in a lower order only while every
    higher order saw it for the first time (Kneser-Ney's continuation counts; on the
    first 200 KB of tinyshakespeare it takes the blend from 2.60 to 2.30 bits/byte;
    PPMd order 6: 2.28).
  - w = the mixer's two weights (Q24), one set for every context (weight sets selected
    by order or by confidence learned slower and lost), starting at (1, 0): the GPT alone.
  - a match model (codec/adapt.MatchModel over bytes): where the last MATCH_BYTES bytes
    occurred before, the byte that followed gets m[length bucket] added.

After each byte y every part steps once on -log2 p_y (p the table), as codec/adapt.py:
w_i += lr (x_i[y] - E_p x_i), m += lr_m ([d == y] - p_d). Python integers and int64 numpy
throughout, so the decoder repeats every step exactly.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..engine.exact.reference import freqs as exact_freqs
from ..engine.exact.tables import log2_table
from .adapt import LEN_BUCKETS, STATE_FRAC, MatchModel, _bucket, match_step

P_FRAC = 32                  # blended probabilities in Q32 (10 n << 32 < 2^63 for n < 2^27)
LOG_FRAC = 10                # log2 values (and logits) in Q10 bits
W_FRAC = 24                  # mixer weights in Q24
W_MAX = 16 << W_FRAC         # |w| <= 16
FLOOR = -(64 << LOG_FRAC)    # inputs are clamped below at -64 bits
MATCH_BYTES = 6              # bytes of context a match is looked up by
CONTEXT_LIMIT = 1 << 21      # contexts kept (all orders; tinyshakespeare has 488K), and
                             # match positions indexed: then only known ones update (memory)
_POW2 = np.array([1 << k for k in range(63)], dtype=np.int64)


def ilog2(x: np.ndarray) -> np.ndarray:
    """floor-ish log2 of positive int64 values, in Q10: (bitlen - 1) 2^10 + LOG2[top 10
    bits of the mantissa] (error below 2^-10 bits + the mantissa's truncation)."""
    b = np.searchsorted(_POW2, x, side="right")              # bit length, 1..63
    sh = b - 11
    m = np.where(sh >= 0, x >> np.maximum(sh, 0), x << np.maximum(-sh, 0))  # [1024, 2048)
    return ((b - 1) << LOG_FRAC) + log2_table()[m - 1024]


class ByteContexts:
    """Byte counts of orders 0..K, shared by the streams, blended into one distribution."""

    def __init__(self, n_streams: int, max_order: int):
        self.orders = tuple(range(1, max_order + 1))
        self.hist = [bytearray() for _ in range(n_streams)]
        self.counts: list[dict] = [{} for _ in self.orders]   # context -> [N, {v: n_v}]
        self.uni = np.ones(256, dtype=np.int64)               # order 0, Laplace
        self.n_ctx = 0                                        # contexts in self.counts

    def predict(self, s: int) -> np.ndarray:
        """Stream s's next byte: log2 of the blended probabilities (256,) int64, Q10."""
        h = self.hist[s]
        p = (self.uni << P_FRAC) // int(self.uni.sum())
        for i, o in enumerate(self.orders):
            if len(h) < o:
                break
            e = self.counts[i].get(bytes(h[len(h) - o:]))
            if e is None:
                break
            n, succ = e
            den = 10 * n + 3
            vs = np.fromiter(succ.keys(), dtype=np.int64, count=len(succ))
            ns = np.fromiter(succ.values(), dtype=np.int64, count=len(succ))
            p = p * (9 * len(succ) + 3) // den
            p[vs] += ((10 * ns - 9) << P_FRAC) // den
        return np.maximum(ilog2(np.maximum(p, 1)) - (P_FRAC << LOG_FRAC), FLOOR)

    def update(self, s: int, y: int) -> None:
        h, novel = self.hist[s], True
        for i in range(len(self.orders) - 1, -1, -1):
            o = self.orders[i]
            if len(h) < o:
                continue
            key = bytes(h[len(h) - o:])
            e = self.counts[i].get(key)
            if e is None:
                if self.n_ctx >= CONTEXT_LIMIT:               # full: no new contexts
                    continue
                e = self.counts[i][key] = [0, {}]
                self.n_ctx += 1
            c = e[1].get(y, 0)
            if novel:
                e[0] += 1
                e[1][y] = c + 1
            novel = novel and c == 0
        if novel:
            self.uni[y] += 1
        h.append(y)


class ByteMixer:
    """The GPT's logits of a step in, frequency tables out; then update(symbols)."""

    def __init__(self, n_streams: int, lr: int, max_order: int, match_lr: int,
                 precision: int):
        self.lr, self.match_lr, self.P = lr, match_lr, precision
        self.ctx = ByteContexts(n_streams, max_order)
        self.match = MatchModel(n_streams, MATCH_BYTES, CONTEXT_LIMIT) if match_lr else None
        self.w = [1 << W_FRAC, 0]                              # GPT, contexts
        self.m = np.zeros(len(LEN_BUCKETS), dtype=np.int64)    # Q(10 + 30) bits
        self._step = None
        self.seconds = 0.0                  # time spent here (for the benchmarks)

    def tables(self, live: np.ndarray, logits: torch.Tensor) -> np.ndarray:
        """Frequency tables (len(live), 256) int64 for streams `live`, whose GPT logits
        (len(live), 256) float are given."""
        t0 = time.perf_counter()
        g = torch.round(logits.double() * ((1 << LOG_FRAC) / math.log(2))).long().numpy()
        g = np.maximum(g - g.max(axis=1, keepdims=True), FLOOR)
        c = np.stack([self.ctx.predict(int(s)) for s in live])
        z = (self.w[0] * g + self.w[1] * c) >> W_FRAC
        preds = []
        if self.match is not None:
            for r, s in enumerate(live):
                pr = self.match.predict(int(s))
                if pr is not None:
                    d, b = pr[0], _bucket(pr[1])
                    z[r, d] += int(self.m[b] >> STATE_FRAC)
                    preds.append((r, d, b))
        f = exact_freqs(torch.from_numpy(z), self.P).numpy()
        self._step = (live, g, c, f, preds)
        self.seconds += time.perf_counter() - t0
        return f

    def update(self, symbols: np.ndarray) -> None:
        """One learning step on the step's coded bytes (after tables())."""
        t0 = time.perf_counter()
        live, g, c, f, preds = self._step
        P, rows = self.P, np.arange(len(live))
        for i, x in enumerate((g, c)):
            grad = int((x[rows, symbols] << P).sum()) - int(np.einsum("rv,rv->", f, x))
            self.w[i] = min(max(self.w[i] + ((self.lr * grad) >> (LOG_FRAC + P)), -W_MAX),
                            W_MAX)
        step = self.match_lr << (24 - P)
        for r, d, b in preds:
            self.m[b] = match_step(int(self.m[b]), step, int(symbols[r]) == d, int(f[r, d]), P)
        for s, y in zip(live, symbols):
            self.ctx.update(int(s), int(y))
            if self.match is not None:
                self.match.update(int(s), int(y))
        self.seconds += time.perf_counter() - t0
