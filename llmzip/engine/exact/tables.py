"""The exact engine's constant tables, computed without libm.

Every transcendental value the engine uses (2^-x, SiLU, GELU, cos/sin for RoPE) comes from
a table of integers defined here. The tables are computed with Python's `decimal` module
(arbitrary precision, correctly rounded exp/ln/sqrt in software) and rounded half-even to
integers, so they are the same on every machine, whatever its libm or CPU. Each table
is computed once per process (milliseconds to about a second) and cached.
"""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

import numpy as np

PREC = 40                                     # decimal digits for every table computation
EXP_BITS = 10                                 # 2^-x tables index x in units of 2^-10
EXP_FRAC = 30                                 # EXP2[i] = round(2^30 * 2^(-i / 1024))
ACT_STEP = 6                                  # activation LUTs: one entry per 2^-6
ACT_RANGE = 16                                # ... over [-16, 16)
ACT_FRAC = 16                                 # ... values in Q16
ROPE_FRAC = 15                                # cos/sin tables in Q15
_ROPE_INNER = 30                              # two-level RoPE tables are Q30 before combining
_ROPE_LO = 64                                 # position = 64 * hi + lo


def _ctx() -> Context:
    return Context(prec=PREC)


def _round(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_HALF_EVEN))


@functools.lru_cache(maxsize=None)
def pi() -> Decimal:
    """pi to PREC digits (the series from the `decimal` documentation's recipes)."""
    with localcontext(_ctx()) as c:
        c.prec += 2
        three = Decimal(3)
        lasts, t, s, n, na, d, da = 0, three, 3, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
    return +s


@functools.lru_cache(maxsize=None)
def log2_table() -> np.ndarray:
    """LOG2[i] = round(2^10 * log2(1 + i/1024)), i = 0..1023 (int64): the mantissa part
    of an integer log2 in Q10 (codec/bytemix.py)."""
    with localcontext(_ctx()):
        ln2 = Decimal(2).ln()
        return np.array([_round((1 + Decimal(i) / (1 << EXP_BITS)).ln() / ln2
                                * (1 << EXP_BITS)) for i in range(1 << EXP_BITS)],
                        dtype=np.int64)


@functools.lru_cache(maxsize=None)
def exp2_table() -> np.ndarray:
    """EXP2[i] = round(2^30 * 2^(-i/1024)), i = 0..1023 (int64). 2^-(d/1024) for any
    d >= 0 is EXP2[d % 1024] >> (d // 1024)."""
    with localcontext(_ctx()):
        ln2 = Decimal(2).ln()
        one = Decimal(1 << EXP_FRAC)
        return np.array([_round(one * (-(ln2 * i) / (1 << EXP_BITS)).exp())
                         for i in range(1 << EXP_BITS)], dtype=np.int64)


def _silu(x: Decimal) -> Decimal:
    return x / (1 + (-x).exp())


def _gelu_tanh(x: Decimal) -> Decimal:
    k = (2 / pi()).sqrt()
    u = k * (x + Decimal("0.044715") * x * x * x)
    e = (2 * u).exp()
    return x * e / (e + 1)                    # = 0.5 x (1 + tanh(u))


@functools.lru_cache(maxsize=None)
def activation_table(name: str) -> np.ndarray:
    """f(i / 64) in Q16 for i = -1024..1024 (2049 entries, int64): the knots of the
    piecewise-linear SiLU ("silu") or tanh-GELU ("gelu") on [-16, 16]."""
    f = {"silu": _silu, "gelu": _gelu_tanh}[name]
    n = ACT_RANGE << ACT_STEP
    with localcontext(_ctx()):
        return np.array([_round(f(Decimal(i) / (1 << ACT_STEP)) * (1 << ACT_FRAC))
                         for i in range(-n, n + 1)], dtype=np.int64)


def _cos_sin(a: Decimal) -> tuple[Decimal, Decimal]:
    """cos and sin of `a` by Taylor series after reduction to [-pi, pi]."""
    two_pi = 2 * pi()
    a = a - two_pi * (a / two_pi).to_integral_value(rounding=ROUND_HALF_EVEN)
    c = s = Decimal(0)
    term, k = Decimal(1), 0                   # a^k / k!
    while True:
        if k % 4 == 0:
            c += term
        elif k % 4 == 1:
            s += term
        elif k % 4 == 2:
            c -= term
        else:
            s -= term
        k += 1
        term = term * a / k
        if abs(term) < Decimal(10) ** (-PREC):
            return +c, +s


@functools.lru_cache(maxsize=None)
def rope_tables(head_dim: int, base: float, n_pos: int, pos_scale: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of p * theta_i / pos_scale, theta_i = base^(-2i/D), in Q15:
    two int64 arrays (n_pos, D/2).

    Computed in two levels so only (64 + n_pos/64) angles per frequency need the
    series: p = 64h + l, cos(p t) = cos(64h t) cos(l t) - sin(64h t) sin(l t), both
    factors rounded to Q30, their products combined exactly in int64 and rounded once
    (half up) to Q15."""
    half = head_dim // 2
    n_hi = -(-n_pos // _ROPE_LO)
    lo = np.zeros((2, _ROPE_LO, half), dtype=np.int64)
    hi = np.zeros((2, n_hi, half), dtype=np.int64)
    one = Decimal(1 << _ROPE_INNER)
    with localcontext(_ctx()):
        lnb = Decimal(repr(float(base))).ln()
        scale = Decimal(repr(float(pos_scale)))
        for i in range(half):
            theta = (-(lnb * 2 * i) / head_dim).exp() / scale
            for table, step, n in ((lo, 1, _ROPE_LO), (hi, _ROPE_LO, n_hi)):
                for j in range(n):
                    c, s = _cos_sin(theta * (j * step))
                    table[0, j, i], table[1, j, i] = _round(c * one), _round(s * one)
    p = np.arange(n_pos)
    ch, sh = hi[0, p // _ROPE_LO], hi[1, p // _ROPE_LO]
    cl, sl = lo[0, p % _ROPE_LO], lo[1, p % _ROPE_LO]
    sh_ = 2 * _ROPE_INNER - ROPE_FRAC
    rnd = 1 << (sh_ - 1)
    cos = (ch * cl - sh * sl + rnd) >> sh_
    sin = (sh * cl + ch * sl + rnd) >> sh_
    return cos, sin
