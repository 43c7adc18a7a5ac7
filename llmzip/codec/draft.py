"""Guesses of the next tokens, so that the decoder can step several positions at once.

The decoder computes one position per step, and a step of the exact engine is bound by
reading the model's weights, not by arithmetic: a second position of a segment costs a
tenth to a fifth of a step (Gemma 3 270M and SmolLM2-135M, AMD Zen 4). So where the next
tokens can be guessed, the decoder feeds the last decoded token *and the guesses* to one
forward pass (ExactEngine.lockstep's `draft`): the table at position t + 1 is right
exactly when the guess for t was, and a table is used only where every token before it is
the decoded one. The first wrong guess ends the pass (its token is still decoded, from a
right table).

Guessing therefore never changes what is decoded, only how fast: the Drafter need not be
exact or repeatable, it only has to be right often enough where it guesses. It is the
simplest model that is: token n-grams (orders 1-3, counted over the tokens decoded so far,
every segment of the chunk together), the most frequent successor of the longest context
seen. How many to guess is chosen per pass for the most tokens per second: the chance
that the first j guesses of every live segment are all right against what a pass of that
many positions costs. Both are measured as the decoder goes: the chance is estimated from
the counts (each guess's share of its context's count, multiplied along the guesses and
across the segments) and then calibrated by how often guesses with an estimate in the
same tenth were right; the cost is timed on the passes run so far (it grows with the
context and differs from CPU to CPU: at 30,000 positions of Gemma's window one more
position costs 1.5 ms of a 13.8 ms step, seven more 40 ms).
"""

from __future__ import annotations

import numpy as np

ORDERS = (3, 2, 1)       # context lengths tried, longest first
COST = 0.18              # a further position before it is timed, in one-position passes
MAX_GUESSES = 7          # positions guessed beyond the one decoded anyway
FLOOR = 0.05             # guesses less likely than this are not considered
EMA = 1 / 8              # weight of the latest pass in a pass shape's timed cost
BUCKETS = 10             # the estimated chances are calibrated in tenths
PRIOR = 4                # pseudo-guesses at the estimate itself in each tenth
MAX_CONTEXTS = 1 << 19   # contexts kept (about 80 MB); past it the counts start again


class Drafter:
    """Token n-gram counts of the decoded tokens; propose() the next tokens worth
    guessing, passed() the pass's outcome and time."""

    def __init__(self, n_seg: int, max_guesses: int = MAX_GUESSES):
        self.max_guesses = max_guesses
        self.hist = [[] for _ in range(n_seg)]     # each segment's last tokens
        self.ctx: dict = {}    # context tuple -> [count, best token, its count, other, its count]
        self.cost: dict = {}   # (live segments, guesses) -> a pass's seconds (moving average)
        self._shape = None     # the last proposal's (live segments, guesses)
        self._tenths = []      # ... and each guess's estimate's tenth
        mid = (np.arange(BUCKETS) + 0.5) / BUCKETS
        self.tried = np.full(BUCKETS, float(PRIOR))   # guesses (joint, from the first on)
        self.right = PRIOR * mid                      # with an estimate in each tenth: right

    def observe(self, seg: int, y: int) -> None:
        """Count token y after segment seg's last tokens."""
        h = self.hist[seg]
        if len(self.ctx) >= MAX_CONTEXTS:
            self.ctx.clear()
        for o in ORDERS:
            if len(h) < o:
                continue
            key = tuple(h[-o:])
            e = self.ctx.get(key)
            if e is None:
                self.ctx[key] = [1, y, 1, -1, 0]
            else:                 # the best successor and one challenger, counted exactly
                e[0] += 1         # from when each was last taken in (space-saving style)
                if e[1] == y:
                    e[2] += 1
                elif e[3] == y:
                    e[4] += 1
                    if e[4] > e[2]:
                        e[1], e[2], e[3], e[4] = y, e[4], e[1], e[2]
                else:
                    e[3], e[4] = y, 1
        h.append(y)
        if len(h) > 2 * max(ORDERS):
            del h[:len(h) - max(ORDERS)]

    def _chain(self, seg: int, n: int) -> tuple[list[int], list[float]]:
        """Up to n guesses for segment seg and the estimated chance that each and every
        guess up to it is right (at least FLOOR)."""
        h, out, conf, p = list(self.hist[seg][-max(ORDERS):]), [], [], 1.0
        while len(out) < n:
            for o in ORDERS:
                e = self.ctx.get(tuple(h[-o:])) if len(h) >= o else None
                if e is not None:
                    break
            else:
                break
            p *= e[2] / (e[0] + 1)
            if p < FLOOR:
                break
            out.append(e[1])
            conf.append(p)
            h.append(e[1])
        return out, conf

    def _cost(self, B: int, k: int) -> float | None:
        """A pass's seconds for B live segments and k guesses each: timed, or before it
        is, the pass without guesses plus COST of it per guess (so that it gets tried)."""
        c = self.cost.get((B, k))
        if c is None and k and (B, 0) in self.cost:
            c = self.cost[(B, 0)] * (1 + COST * k)
        return c

    def propose(self, live: np.ndarray, limit: int) -> np.ndarray:
        """Guesses (len(live), k), k <= limit, of the next k tokens of the segments `live`
        stepped together (the first is the token about to be decoded): the k that gives
        the most tokens a second, 1 + the sum over j <= k of the (calibrated) chance that
        every segment's first j guesses are right, over the pass's cost (none until a
        pass with none has been timed)."""
        B, n, k = len(live), min(limit, self.max_guesses), 0
        base = self.cost.get((B, 0))
        chains = [self._chain(int(s), n) for s in live] if n > 0 and base else []
        tokens, best, tenths = 1.0, 1.0 / base if base else 0.0, []
        for j in range(n if chains else 0):
            p = 1.0
            for _, c in chains:
                p = p * c[j] if j < len(c) else 0.0
            if p < FLOOR:
                break
            b = min(int(p * BUCKETS), BUCKETS - 1)
            tenths.append(b)
            tokens += self.right[b] / self.tried[b]    # how often such guesses were right
            rate = tokens / self._cost(B, j + 1)
            if rate > best:
                k, best = j + 1, rate
        self._shape, self._tenths = (B, k), tenths[:k]
        return np.array([g[:k] for g, _ in chains], dtype=np.int64).reshape(B, k)

    def passed(self, right: int, seconds: float) -> None:
        """The last proposal's pass: its first `right` guesses were the decoded tokens,
        and it took `seconds`."""
        for j, b in enumerate(self._tenths):
            self.tried[b] += 1
            self.right[b] += j < right
        if self._shape is not None:
            old = self.cost.get(self._shape)
            self.cost[self._shape] = seconds if old is None else old + EMA * (seconds - old)
