"""The exact engine's reference forward pass: the spec (docs/engine.md) as plain torch
integer code, written for reading. The fast paths must equal it bit for bit.

Fixed-point formats (value = integer * 2^-frac):
  residual stream   RES_FRAC = 16 (int64)
  norm outputs, q/k/v, attention outputs, MLP hidden: ACT_FRAC = 12
  attention scores and logits: LOGIT_FRAC = 10, in units of log2 (bits), not nats
Shapes: B batch, T new positions, S cached positions, C width, H query heads, K kv heads,
G = H // K, D head size, F MLP width, V vocabulary.
"""

from __future__ import annotations

import copy
import math

import torch

from . import tables as T
from .intops import (bit_length, exp2_neg, floor_div, isqrt, lut_activation, quant_pow2,
                     round_div, rshift_round, shift_floor)
from .weights import GAIN_FRAC, LOG2E, IntLinear, IntModel

RES_FRAC = 16
ACT_FRAC = 12
LOGIT_FRAC = 10
NORM_IN_LEVELS = (1 << 20) - 1      # the norm's input is first reduced to 21-bit integers
NORM_FRAC = 16                      # x / rms(x) in Q16
ATT_CLAMP = (1 << 24) - 1          # q, k, v are clamped to +-ATT_CLAMP (Q12) for attention
KV_LEVELS = 127                     # keys and values: int8 per (position, kv head)
PROB_FRAC = 16                      # attention weights in Q16
ATT_MULT_BITS = 30                  # A = rint(scale log2(e) / 127 2^30)
SCORE_MULT_BITS = 22                # key multipliers km <= 2^22
SCORE_SHIFT = 2 * ACT_FRAC + ATT_MULT_BITS - LOGIT_FRAC     # 44
Z_CLAMP = 1 << 30                   # scores and logits are clamped to +-2^30 (2^20 bits)


def linear(x: torch.Tensor, lin: IntLinear, in_frac: int, out_frac: int) -> torch.Tensor:
    """x (..., K) int64 in Q`in_frac` -> x W^T (..., N) int64 in Q`out_frac`.

    The input is quantised per row to |a| <= lin.levels with a power-of-two step 2^e; the
    integer product a W^T is exact in int32 (the levels bound keeps every partial sum
    below 2^31); each output is rshift_round(acc * mult_n, sb + in_frac - out_frac - e)."""
    a, e = quant_pow2(x, lin.levels)
    acc = (a.double() @ _f64(lin)).long()                   # exact: |acc| < 2^31
    return rshift_round(acc * lin.mult, lin.sb + in_frac - out_frac - e)


def _f64(lin: IntLinear) -> torch.Tensor:
    """W^T as float64 (exact for int8), converted once per matrix: the reference's
    matrix products run in float64, exact for integers below 2^53."""
    if getattr(lin, "_w64", None) is None:
        lin._w64 = lin.w.double().t()
    return lin._w64


def rmsnorm(x: torch.Tensor, gain: torch.Tensor, out_frac: int) -> torch.Tensor:
    """x / rms(x) * gain over the last dim, for x in any fixed point (it cancels).

    xs = x reduced to 21-bit integers (quant_pow2); ss = sum xs^2 (exact);
    r = isqrt(ss * 2^10) ~ rms * sqrt(C) * 2^5; t = floor(xs * Q / r) with
    Q = isqrt(C * 2^42): x / rms(x) in Q16; then rshift_round(t * gain, 16 + 16 - out_frac).
    epsilon is not used (it matters only for a vector within 1e-5 of zero); r >= 1."""
    t, _, _ = normalized(x)
    return rshift_round(t * gain, NORM_FRAC + GAIN_FRAC - out_frac)


def normalized(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rmsnorm's integers: (t = x / rms(x) in Q16, r = isqrt(sum xs^2 2^10) >= 1, ex) for
    x = xs 2^ex with xs reduced to 21 bits (dynamic evaluation's backward pass uses them)."""
    C = x.shape[-1]
    xs, ex = quant_pow2(x, NORM_IN_LEVELS)
    r = isqrt((xs * xs).sum(-1, keepdim=True) << 10).clamp(min=1)
    return floor_div(xs * math.isqrt(C << 42), r), r, ex


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, halves: bool) -> torch.Tensor:
    """Rotate pairs of x (B, T, h, D) by Q15 tables cos/sin (T, D/2): adjacent pairs
    (2i, 2i+1) for Llama, halves (i, i + D/2) for Gemma."""
    if halves:
        a, b = x.chunk(2, dim=-1)
    else:
        a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    ra = rshift_round(a * c - b * s, T.ROPE_FRAC)
    rb = rshift_round(a * s + b * c, T.ROPE_FRAC)
    if halves:
        return torch.cat((ra, rb), dim=-1)
    return torch.stack((ra, rb), dim=-1).flatten(-2)


def quant_kv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., D) int64 -> (int8-valued q, scale sigma (...,)): sigma = max|x|,
    q = round_div(127 x, sigma) (0 where sigma is 0)."""
    sigma = x.abs().amax(-1)
    q = round_div(KV_LEVELS * x, sigma.clamp(min=1)[..., None])
    return q, sigma


class Cache:
    """Keys and values of every layer, per (segment, kv head, position): int8 keys with
    a score multiplier (km, ke), int8 values with their scale vs."""

    def __init__(self, m: IntModel, batch: int, max_len: int):
        c = m.cfg
        shape = (batch, c.n_kv_head, max_len, c.head_dim)
        self.kq = [torch.zeros(shape, dtype=torch.int8) for _ in m.layers]
        self.vq = [torch.zeros(shape, dtype=torch.int8) for _ in m.layers]
        self.km = [torch.zeros(shape[:3], dtype=torch.int64) for _ in m.layers]
        self.ke = [torch.zeros(shape[:3], dtype=torch.int64) for _ in m.layers]
        self.vs = [torch.zeros(shape[:3], dtype=torch.int64) for _ in m.layers]
        self.batch, self.max_len = batch, max_len


def score_multiplier(m: IntModel) -> int:
    """A = rint(scale * log2(e) / 127 * 2^30) (< 2^24): the score's constant factor."""
    return round(m.attn_scale * LOG2E / KV_LEVELS * (1 << ATT_MULT_BITS))


def key_multiplier(sigma: torch.Tensor, A: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma_k * A (< 2^48) as km * 2^ke with km <= 2^22 (so that dot * km < 2^53)."""
    P = sigma * A
    ke = (bit_length(P) - SCORE_MULT_BITS).clamp(min=0)
    return rshift_round(P, ke), ke


def attention(m: IntModel, q: torch.Tensor, cache: Cache, seg: torch.Tensor, li: int,
              pos: int, window: int) -> torch.Tensor:
    """Causal attention of new queries q (B, T, H, D) in Q12 at positions pos..pos+T-1
    over cached positions 0..pos+T-1. Returns (B, T, H*D) in Q12.

    q is quantised per (position, head) to 16 bits (quant_pow2, step 2^eq); scores
    dot = q . k_int8 (exact), z = floor(dot * km * 2^(ke + eq - 44)) in Q10 log2 units,
    clamped to +-2^30;
    weights e_s = exp2_neg(max z - z_s) (0 outside the causal window), normalised to
    p = probabilities(e, 2^16) (Q16); output
    floor(sum_s p_s vs_s v_int8 / (127 * 2^16)). Every product and sum is an integer
    below 2^53 (float64 may hold any of them exactly)."""
    B, T, H, D = q.shape
    K = m.cfg.n_kv_head
    G, S = H // K, pos + T
    q16, eq = quant_pow2(q, 32767)                             # (B, T, H, D), (B, T, H, 1)
    qg = q16.permute(0, 2, 1, 3).reshape(B, K, G * T, D)       # rows: head-major, then t
    eqg = eq.permute(0, 2, 1, 3).reshape(B, K, G * T, 1)
    kq, vq = cache.kq[li][seg, :, :S].long(), cache.vq[li][seg, :, :S].long()
    km, ke = cache.km[li][seg, :, None, :S], cache.ke[li][seg, :, None, :S]
    vs = cache.vs[li][seg, :, :S]
    dot = (qg.double() @ kq.double().transpose(-1, -2)).long()  # (B, K, G*T, S) exact
    z = shift_floor(dot * km, SCORE_SHIFT - ke - eqg).clamp(-Z_CLAMP, Z_CLAMP)  # Q10 bits
    qpos = (torch.arange(T) + pos).repeat(G)[:, None]          # (G*T, 1)
    kpos = torch.arange(S)[None, :]
    ok = kpos <= qpos
    if window:
        ok &= kpos > qpos - window
    zmax = torch.where(ok, z, torch.iinfo(torch.int64).min).amax(-1, keepdim=True)
    e = torch.where(ok, exp2_neg((zmax - z).clamp(min=0)), 0)
    p = probabilities(e, 1 << PROB_FRAC)                       # Q16, sum <= 2^16
    num = ((p * vs[:, :, None, :]).double() @ vq.double()).long()   # exact: < 2^47
    y = floor_div(num, KV_LEVELS << PROB_FRAC)                 # (B, K, G*T, D) Q12
    return y.view(B, K, G, T, D).permute(0, 3, 1, 2, 4).reshape(B, T, H * D)


def probabilities(e: torch.Tensor, total: int) -> torch.Tensor:
    """Weights e (..., n), each <= 2^30, scaled to sum to at most `total` (< 2^25):

        E = sum e;  t = max(0, bitlen(E) - 40);  E' = ceil(E / 2^t);  b = bitlen(E')
        k = b + 21 - bitlen(total);  R = floor(total * 2^k / E')      (2^20 < R < 2^22)
        p = floor(e * R / 2^(k + t))

    Every product e * R is below 2^52 (float64 holds it exactly), total * 2^k = 2^(b+21)
    at most fits int64, and sum p <= total * E / (E' 2^t) <= total."""
    E = e.sum(-1, keepdim=True)
    t = (bit_length(E) - 40).clamp(min=0)
    E1 = ((E - 1) >> t) + 1
    k = bit_length(E1) + 21 - total.bit_length()
    R = floor_div(total << k, E1)
    return (e * R) >> (k + t)


def forward(m: IntModel, tokens: torch.Tensor, cache: Cache, pos: int, tabs: dict,
            seg: torch.Tensor | None = None, capture: dict | None = None) -> torch.Tensor:
    """tokens (B, T) at positions pos..pos+T-1 of the cache's segments `seg` (default:
    0..B-1) -> logits (B, T, V) int64 in Q10 log2 units (the cache is filled for those
    positions). capture, if given, gets for each layer index among its keys the residual
    stream after that layer's attention (B*T, C), and under "final" the residual stream
    before the final norm (dynamic evaluation, learn.py, learns from them)."""
    c = m.cfg
    gemma = m.arch == "gemma3"
    B, Tn = tokens.shape
    H, K, D = c.n_head, c.n_kv_head, c.head_dim
    seg = torch.arange(B) if seg is None else seg
    e = m.emb
    x = rshift_round(e.w[tokens].long() * e.mult[tokens][..., None], e.sb - RES_FRAC)
    for li, L in enumerate(m.layers):
        cos, sin = tabs[L.rope]
        cos, sin = cos[pos:pos + Tn], sin[pos:pos + Tn]
        h = rmsnorm(x, L.attn_norm, ACT_FRAC)
        qkv = linear(h, L.qkv, ACT_FRAC, ACT_FRAC).view(B, Tn, H + 2 * K, D)
        q, k, v = qkv[:, :, :H], qkv[:, :, H:H + K], qkv[:, :, H + K:]
        if gemma:
            q, k = rmsnorm(q, L.q_norm, ACT_FRAC), rmsnorm(k, L.k_norm, ACT_FRAC)
        q, k = rope(q, cos, sin, gemma), rope(k, cos, sin, gemma)
        q, k, v = (t.clamp(-ATT_CLAMP, ATT_CLAMP) for t in (q, k, v))
        kq, ks = quant_kv(k.transpose(1, 2))                     # (B, K, T, D), (B, K, T)
        vq, vs = quant_kv(v.transpose(1, 2))
        km, ke = key_multiplier(ks, score_multiplier(m))
        cache.kq[li][seg, :, pos:pos + Tn] = kq.to(torch.int8)
        cache.km[li][seg, :, pos:pos + Tn] = km
        cache.ke[li][seg, :, pos:pos + Tn] = ke
        cache.vq[li][seg, :, pos:pos + Tn] = vq.to(torch.int8)
        cache.vs[li][seg, :, pos:pos + Tn] = vs
        y = attention(m, q, cache, seg, li, pos, L.window)
        if gemma:
            o = linear(y, L.o, ACT_FRAC, ACT_FRAC)
            x = x + rmsnorm(o, L.post_attn_norm, RES_FRAC)
        else:
            x = x + linear(y, L.o, ACT_FRAC, RES_FRAC)
        if capture is not None and li in capture:
            capture[li] = x.reshape(B * Tn, -1).clone()
        h = rmsnorm(x, L.ffn_norm, ACT_FRAC)
        gu = linear(h, L.gate_up, ACT_FRAC, ACT_FRAC)
        gate, up = gu.split(c.ffn_hidden, dim=-1)
        act = lut_activation(gate, "gelu" if gemma else "silu", ACT_FRAC)
        z = rshift_round(act * up, ACT_FRAC)
        if gemma:
            x = x + rmsnorm(linear(z, L.down, ACT_FRAC, ACT_FRAC), L.post_ffn_norm, RES_FRAC)
        else:
            x = x + linear(z, L.down, ACT_FRAC, RES_FRAC)
    if capture is not None:
        capture["final"] = x.reshape(B * Tn, -1).clone()
    h = rmsnorm(x, m.norm, ACT_FRAC)
    return linear(h, m.head, ACT_FRAC, LOGIT_FRAC)


class RopeTables:
    """A model's RoPE tables from any position on: views into tables of every position
    up to a size that doubles when a call needs more (a table entry depends only on its
    position, so the size never changes a value). Thread-safe: one tuple is replaced."""

    def __init__(self, m: IntModel, contiguous: bool = False):
        self.m, self.contiguous = m, contiguous
        self._have: tuple = (0, {})

    def get(self, n_pos: int, at: int = 0) -> dict:
        """{name: (cos, sin)} for positions at .. at + n_pos - 1 (and beyond)."""
        n, tabs = self._have
        if n < n_pos + at:
            n = max(1024, 2 * n)
            while n < n_pos + at:
                n *= 2
            tabs = rope_tabs(self.m, n)
            if self.contiguous:
                tabs = {k: (c.contiguous(), s.contiguous()) for k, (c, s) in tabs.items()}
            self._have = (n, tabs)
        return {k: (c[at:], s[at:]) for k, (c, s) in tabs.items()}


def rope_tabs(m: IntModel, n_pos: int) -> dict:
    c = m.cfg
    to_t = lambda cs: tuple(torch.from_numpy(a) for a in cs)
    if m.arch == "gemma3":
        return {"global": to_t(T.rope_tables(c.head_dim, c.rope_base, n_pos, c.rope_scale)),
                "local": to_t(T.rope_tables(c.head_dim, c.rope_base_local, n_pos))}
    return {"global": to_t(T.rope_tables(c.head_dim, c.rope_base, n_pos))}


def freqs(logits: torch.Tensor, precision: int = 24) -> torch.Tensor:
    """Integer logits (..., V) in Q10 log2 units -> frequencies, each >= 1, each row
    summing to 2^precision: with the logits clamped to +-2^30, e_v = exp2_neg(max - l_v);
    f_v = 1 + probabilities(e,
    2^precision - V); the remainder goes to the first most probable symbol."""
    V = logits.shape[-1]
    logits = logits.clamp(-Z_CLAMP, Z_CLAMP)
    top = logits.amax(-1, keepdim=True)
    f = 1 + probabilities(exp2_neg(top - logits), (1 << precision) - V)
    rem = (1 << precision) - f.sum(-1, keepdim=True)
    first = torch.argmax((logits == top).to(torch.uint8), dim=-1, keepdim=True)
    return f.scatter_add(-1, first, rem)


def copy_model(m: IntModel) -> IntModel:
    """A shallow copy of m with its own list of layers."""
    c = copy.copy(m)
    c.layers = list(m.layers)
    return c


class ReferenceModel:
    """The reference with the fast path's interface (fast.FastModel): the oracle of the
    tests, and the engine where no C compiler is available."""

    def __init__(self, m: IntModel):
        self.m, self.cfg = m, m.cfg
        self._tabs = RopeTables(m)

    def new_cache(self, batch: int, max_len: int) -> Cache:
        return Cache(self.m, batch, max_len)

    def forward(self, tokens, seg, pos, cache, threads=1, precision=24, out="freqs", rope=0,
                capture=None, dest=None):          # dest: FastModel's (not used here)
        tabs = self._tabs.get(cache.max_len, rope)
        logits = forward(self.m, tokens.long(), cache, pos, tabs, seg.long(), capture)
        if out == "cache":
            return None
        if out == "logits":
            return logits.clamp(-Z_CLAMP, Z_CLAMP).to(torch.int32)
        return freqs(logits, precision).to(torch.int32)

    def clone(self) -> "ReferenceModel":
        """A copy whose matrices set_linear may replace (the rest is shared)."""
        return ReferenceModel(copy_model(self.m))

    def set_linear(self, li: int, name: str, lin) -> None:
        """Replace matrix `name` of layer li (dynamic evaluation steps the weights)."""
        L = copy.copy(self.m.layers[li])
        setattr(L, name, lin)
        self.m.layers[li] = L

    def shift(self, cache: Cache, seg: torch.Tensor, by: int, keep: int) -> None:
        """Move cached positions by..by+keep-1 of segments `seg` to 0..keep-1."""
        for lst in (cache.kq, cache.vq, cache.km, cache.ke, cache.vs):
            for x in lst:
                x[seg, :, :keep] = x[seg, :, by:by + keep].clone()

    def table(self, logits, bias, precision, threads=1) -> torch.Tensor:
        """Frequency tables from clamped logits (M, V) plus a bias ((V,) or (M, V))."""
        x = logits.long() if bias is None else logits.long() + bias.long()
        return freqs(x, precision).to(torch.int32)
