"""Dynamic evaluation in exact arithmetic: the model learns the file as it codes it.

After every block of BLOCK positions (of every live segment together) the MLPs of the
last `layers` transformer blocks take one step of Adam with beta1 = 0 (RMS-normalised
gradient descent, beta2 = 1 - 2^-10, bias-corrected) on the code length of the block's
tokens, on both sides alike: the encoder between its block prefills, the decoder between
its steps. The next block runs on the new weights; keys and values already cached stay as
they were computed (both sides keep them).

What the step sees, per coded token (row):
  - the final residual stream and, for each trained layer, the residual stream after its
    attention: captured by the forward pass (reference.forward / FastModel.hidden);
  - the gradient at the logits, p - onehot(y), from the table the token was coded with
    (only the entries with p >= 2^-14, and y itself: a sparse, exact approximation).
The backward pass recomputes each trained MLP from its captured input in the reference's
arithmetic, goes back through the final norm, the MLPs and their norms (not through
attention: the gradient reaching a layer's output passes to its attention's input
unchanged), and sums the weight gradients over the block's rows.

Every number is an integer, or a tensor of integers with one power-of-two exponent
(value = q 2^e, |q| <= 2^15 after `_q`), so that every matrix product runs exactly in
float64 (all sums below 2^53) and every step is the same on any machine. Master weights
are kept in int64 with MASTER_FRAC bits below the int8 step of their row (row scales and
multipliers never change); the forward pass runs on their rounding to int8.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .intops import bit_length, floor_div, isqrt, lut_activation, quant_pow2, rshift_round
from .reference import ACT_FRAC, RES_FRAC, linear, normalized, rmsnorm
from . import tables as T
from .weights import IntLinear, levels_for

BLOCK = 256              # positions per step
MASTER_FRAC = 16         # master weights: int8 steps in Q16
V_SHIFT = 10             # beta2 = 1 - 2^-10
CORR_FRAC = 30           # Adam's bias correction 1 - beta2^steps in Q30
LR_FRAC = 30             # the rate is the learning rate in 2^-30 (as Adam's lr on weights)
K_FRAC = 32              # per-row step factors lr / scale in Q32
R_CLAMP = 32 << 16       # normalised gradients (Q16) are clamped to +-32 (its bound)
G_BITS = 20              # bits of each gradient kept for the step (per row)
SPARSE_FRAC = 14         # logit gradients kept where p >= 2^-SPARSE_FRAC (and at y)
Q_LEVELS = 32767         # every operand of a product is first reduced to 16 bits
NAMES = ("gate_up", "down")


def _q(x: torch.Tensor, e: int) -> tuple[torch.Tensor, int]:
    """x 2^e -> (q, e') with |q| <= 2^15 - 1 and one exponent for the whole tensor."""
    q, s = quant_pow2(x.reshape(1, -1), Q_LEVELS)
    return q.view(x.shape), e + int(s)


def _q_cols(x: torch.Tensor, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (R, K) 2^e -> (q, ek): x[:, k] 2^e ~ q[:, k] 2^ek[k], |q| <= 2^15 - 1, one
    exponent per column (a column's outliers do not wipe out the others)."""
    q, s = quant_pow2(x.t(), Q_LEVELS)                           # per row of x^T
    return q.t(), e + s.view(1, -1)


def _weight_grad(a: torch.Tensor, ea: int, b: torch.Tensor, eb: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sum over rows r of a[r, n] b[r, k] for a 2^ea (R, N) and b 2^eb (R, K): an integer
    matrix g (N, K) with exponents en (N, 1) and ek (1, K): g[n, k] 2^(en[n] + ek[k])."""
    aq, en = _q_cols(a, ea)
    bq, ek = _q_cols(b, eb)
    return _mm(aq.t(), bq), en.view(-1, 1), ek


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b of integer tensors, exactly (the callers keep every sum below 2^53)."""
    return (a.double() @ b.double()).long()


def _add(a: torch.Tensor, ea: int, b: torch.Tensor, eb: int) -> tuple[torch.Tensor, int]:
    """a 2^ea + b 2^eb, each first reduced to 16 bits."""
    a, ea = _q(a, ea)
    b, eb = _q(b, eb)
    e = max(ea, eb) - 20
    return rshift_round(a, e - ea) + rshift_round(b, e - eb), e


def norm_backward(x: torch.Tensor, gain: torch.Tensor, dy: torch.Tensor, ey: int
                  ) -> tuple[torch.Tensor, int]:
    """The gradient at x (M, C) of rmsnorm(x, gain) given the gradient dy 2^ey at its
    output: (u - xh mean(xh u)) / rms(x) with u = gain dy and xh = x / rms(x), computed
    from the same integers as reference.rmsnorm (xs, r, the Q16 xh)."""
    C = x.shape[-1]
    xh, r, ex = normalized(x)              # x / rms(x) in Q16; r = rms(xs) sqrt(C) 2^5
    d, e = _q(dy, ey)
    u, e = _q(d * gain, e - 16)                                  # gain is Q16
    m = floor_div((xh * u).sum(-1, keepdim=True), C)             # mean(xh u) in Q16
    w, e = _q((u << 16) - rshift_round(xh * m, 16), e - 16)      # (u - xh m), Q16 folded
    # divide by rms(x) = r 2^ex / (sqrt(C) 2^5) = r 2^(ex + 16) / isqrt(C 2^42): one
    # rounding per element (|w isqrt(C 2^42) 2^14| < 2^56 for C < 2^12)
    return floor_div((w * math.isqrt(C << 42)) << 14, r << ex), e - 30


def act_slope(x: torch.Tensor, name: str, frac: int) -> torch.Tensor:
    """The derivative of intops.lut_activation at x (Q`frac`), in Q10: the slope of its
    linear piece ((knot i+1 - knot i) per 2^-6, Q16 -> Q10); 1 from 16 up, 0 below -16."""
    table = torch.from_numpy(T.activation_table(name))
    n = T.ACT_RANGE << T.ACT_STEP
    i = x >> (frac - T.ACT_STEP)
    idx = (i + n).clamp(0, 2 * n - 1)
    s = table[idx + 1] - table[idx]
    s = torch.where(i < -n, 0, s)
    return torch.where(i >= n, 1 << 10, s)


class _Param:
    """One trained matrix: master weights and Adam's second moment, v 2^ev, with one
    exponent per row (int64 holds 60 bits of every row's range: a gradient below 2^-40
    of its row's largest is a zero, as a tiny one is under Adam's epsilon)."""

    def __init__(self, lin: IntLinear, rate: int):
        self.lin = lin
        self.master = lin.w.long() << MASTER_FRAC
        self.v = torch.zeros_like(self.master)
        self.ev = torch.full((lin.w.shape[0], 1), -(1 << 20), dtype=torch.int64)
        # a row's step factor lr / scale in Q32: the row scale is mult 2^-sb
        if rate.bit_length() + lin.sb + K_FRAC - LR_FRAC > 62:
            from ...errors import UsageError
            raise UsageError(f"dynamic evaluation rate {rate} is too large for this model")
        self.k = floor_div(torch.full_like(lin.mult, rate) << (lin.sb + K_FRAC - LR_FRAC),
                           lin.mult.clamp(min=1))[:, None]

    def step(self, g: torch.Tensor, en: torch.Tensor, ek: torch.Tensor, corr_sqrt: int
             ) -> IntLinear:
        """One update with the gradient g[n, k] 2^(en[n] + ek[k]) (|g| < 2^53); returns
        the new matrix."""
        kmax = int(ek.max())
        g = rshift_round(g, (kmax - ek).clamp(max=62))           # one exponent per row
        er = en.view(-1, 1) + kmax
        s = (bit_length(g.abs().amax(1, keepdim=True)) - G_BITS).clamp(min=0)
        g, er = rshift_round(g, s), er + s                       # |g| <= 2^20
        g2, e2 = g * g, 2 * er
        top = g2.amax(1, keepdim=True)                           # a row without gradient
        e = torch.maximum(self.ev, torch.where(top > 0, e2 + bit_length(top) - 60, self.ev))
        v = rshift_round(self.v, (e - self.ev).clamp(max=62))    # ev never decreases
        self.v = v - (v >> V_SHIFT) + (rshift_round(g2, (e - e2).clamp(max=62)) >> V_SHIFT)
        self.ev = e
        kk = e & 1                                               # e - kk is even
        sq = isqrt(self.v << kk).clamp(min=1)                    # sqrt(v 2^e) = sq 2^((e-kk)/2)
        # r = g / sqrt(v / c) in Q16 = g sqrt(c) / sqrt(v), sqrt(c) = corr_sqrt 2^-30
        q = floor_div(g * corr_sqrt, sq).clamp(-(1 << 40), 1 << 40)
        sh = (er + 16 - 30 - ((e - kk) >> 1)).clamp(max=20)
        r = rshift_round(q, (-sh).clamp(max=62)).clamp(-R_CLAMP, R_CLAMP)
        # master (Q16 of an int8 step) -= r lr / scale
        self.master -= rshift_round(r * self.k, 16 + K_FRAC - MASTER_FRAC)
        lim = 127 << MASTER_FRAC
        self.master.clamp_(-lim, lim)
        w = rshift_round(self.master, MASTER_FRAC).clamp(-127, 127).to(torch.int8)
        self.lin = IntLinear(w, self.lin.mult, self.lin.sb, levels_for(w.numpy()))
        return self.lin


class Learner:
    """Dynamic evaluation of one coding run (n_seg segments): wraps a copy of the runner
    (FastModel or ReferenceModel) whose trained matrices it replaces after each block."""

    def __init__(self, runner, n_seg: int, rate: int, layers: int = 2, precision: int = 24,
                 block: int | None = None):
        self.run = runner.clone()
        m = self.run.m
        if m.arch != "llama":
            from ...errors import UsageError
            raise UsageError(f"dynamic evaluation (adapt dyneval) supports Llama-style models "
                             f"such as SmolLM2 only, not {m.arch}: leave dyneval out of "
                             f"--adapt, or choose such a model with --model")
        self.layers = list(range(len(m.layers) - layers, len(m.layers)))
        self.params = {(li, n): _Param(getattr(m.layers[li], n), rate)
                       for li in self.layers for n in NAMES}
        self.precision, self.n_seg = precision, n_seg
        self.block = block or BLOCK       # (tests use shorter blocks)
        C = m.cfg.n_embd
        self.buf = {k: torch.zeros((n_seg, self.block, C), dtype=torch.int64)
                    for k in self.layers + ["final"]}
        self.seen = np.zeros((n_seg, self.block), dtype=bool)
        self.grads: list = []             # (rows: seg * block + j, vocab ids, coefs)
        self.corr = 0                     # 1 - beta2^steps in Q(CORR_FRAC)
        self.due = False
        self.steps, self.seconds = 0, 0.0
        self.keep_grads = False           # keep the last step's gradients (last_grads)

    # -- what the engine calls -----------------------------------------------------
    def capture(self) -> dict:
        """The capture dict for a forward pass whose rows this learner will see."""
        return {li: None for li in self.layers}

    def captured(self, seg: np.ndarray, t: np.ndarray, cap: dict) -> None:
        """Keep the captured rows of segments seg (M,) at token indices t (M,)."""
        s, j = torch.from_numpy(seg.astype(np.int64)), torch.from_numpy(t % self.block)
        for k, buf in self.buf.items():
            buf[s, j] = cap[k]

    def sync(self) -> None:
        """Take the step a finished block is owed (before the next forward pass)."""
        if self.due:
            self.due = False
            self.update()

    # -- what the codec calls ------------------------------------------------------
    def observe(self, t: int, live: np.ndarray, tables: np.ndarray, symbols: np.ndarray
                ) -> None:
        """Token t of segments `live` was coded with `tables` (len(live), V)."""
        j = t % self.block
        rows, cols = np.nonzero(tables >= 1 << (self.precision - SPARSE_FRAC))
        coef = tables[rows, cols].astype(np.int64)
        hit = cols == symbols[rows]
        coef[hit] -= 1 << self.precision
        miss = np.ones(len(live), dtype=bool)
        miss[rows[hit]] = False                   # y itself below the threshold
        mr = np.nonzero(miss)[0]
        rows = np.concatenate([rows, mr])
        cols = np.concatenate([cols, symbols[mr]])
        coef = np.concatenate([coef, tables[mr, symbols[mr]].astype(np.int64)
                               - (1 << self.precision)])
        self.grads.append((live[rows] * self.block + j, cols, coef))
        self.seen[live, j] = True
        if j == self.block - 1:
            self.due = True

    # -- the step --------------------------------------------------------------------
    def update(self) -> None:
        t0 = time.perf_counter()
        m = self.run.m
        idx = np.nonzero(self.seen.reshape(-1))[0]
        if len(idx) == 0 or not self.grads:
            return
        pos = np.full(self.n_seg * self.block, -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        rid, voc, coef = (np.concatenate(a) for a in zip(*self.grads))
        self.grads = []
        self.seen[:] = False
        R, C = len(idx), m.cfg.n_embd
        flat = lambda k: self.buf[k].view(-1, C)[torch.from_numpy(idx)]
        # gradient at the final hidden state h: sum_v (p_v - [v = y]) W_head[v] (exact)
        dh = _head_backward(m.head, pos[rid], voc, coef, R)
        eh = 16 - self.precision - m.head.sb
        g, eg = norm_backward(flat("final"), m.norm, dh, eh)
        grads = {}
        for li in reversed(self.layers):
            L = m.layers[li]
            xa = flat(li)
            n = rmsnorm(xa, L.ffn_norm, ACT_FRAC)                 # Q12
            gu = linear(n, L.gate_up, ACT_FRAC, ACT_FRAC)
            gate, up = gu.split(m.cfg.ffn_hidden, dim=-1)
            act = lut_activation(gate, "silu", ACT_FRAC)
            z = rshift_round(act * up, ACT_FRAC)
            # g is the gradient per integer unit of the residual stream (Q16): the down
            # projection's real output y adds y 2^16 to it, so dL/dy = g 2^16
            gq, egq = _q(g, eg)
            grads[(li, "down")] = _weight_grad(gq, egq + RES_FRAC, z, -ACT_FRAC)  # (C, F)
            dz, edz = _back_linear(gq, egq + RES_FRAC, L.down)    # (R, F)
            dzq, edz = _q(dz, edz)
            dgate = dzq * up * act_slope(gate, "silu", ACT_FRAC)  # 2^(edz - 12 - 10)
            dup = (dzq * act) << 10
            dgu, egu = torch.cat((dgate, dup), -1), edz - ACT_FRAC - 10
            grads[(li, "gate_up")] = _weight_grad(dgu, egu, n, -ACT_FRAC)   # (2F, C)
            dgu, egu = _q(dgu, egu)
            dn, edn = _back_linear(dgu, egu, L.gate_up)           # (R, C)
            db, edb = norm_backward(xa, L.ffn_norm, dn, edn)
            g, eg = _add(g, eg, db, edb)                          # the residual path
        self.corr += ((1 << CORR_FRAC) - self.corr) >> V_SHIFT
        corr_sqrt = math.isqrt(self.corr << (60 - CORR_FRAC))          # sqrt(1 - b^t) 2^30
        if self.keep_grads:                                       # (the tests look)
            self.last_grads = grads
        for (li, name), p in self.params.items():
            self.run.set_linear(li, name, p.step(*grads[(li, name)], corr_sqrt))
        self.steps += 1
        self.seconds += time.perf_counter() - t0


def _head_backward(head: IntLinear, row: np.ndarray, voc: np.ndarray, coef: np.ndarray,
                   R: int, chunk: int = 256) -> torch.Tensor:
    """sum over the kept entries of each row of rshift_round(coef mult_v, 16) w_v: the
    gradient at the output layer's input (R, C), up to the factor 2^(16 - sb). Computed
    as a product over the vocabulary ids that occur ((rows, ids) @ (ids, C) in float64:
    every term < 2^36, every sum < 2^50, so exact)."""
    C = head.w.shape[1]
    out = torch.empty((R, C), dtype=torch.int64)
    order = np.argsort(row, kind="stable")
    row, voc, coef = row[order], voc[order], coef[order]
    bounds = np.searchsorted(row, np.arange(0, R + chunk, chunk))
    for i, r0 in enumerate(range(0, R, chunk)):
        a, b = bounds[i], bounds[i + 1]
        ids, inv = np.unique(voc[a:b], return_inverse=True)
        vo = torch.from_numpy(ids)
        c = rshift_round(torch.from_numpy(coef[a:b]) * head.mult[vo][inv], 16)
        S = torch.zeros((min(chunk, R - r0), len(ids)), dtype=torch.float64)
        S[torch.from_numpy(row[a:b] - r0), torch.from_numpy(inv)] = c.double()
        out[r0:r0 + len(S)] = (S @ head.w[vo].double()).long()
    return out


def _back_linear(g: torch.Tensor, eg: int, lin: IntLinear) -> tuple[torch.Tensor, int]:
    """g 2^eg (R, N) at the output of y = x W^T -> the gradient at x (R, K), where the
    real matrix is w mult 2^-sb."""
    gm, e = _q(g * lin.mult, eg)
    return _mm(gm, lin.w.long()), e - lin.sb
