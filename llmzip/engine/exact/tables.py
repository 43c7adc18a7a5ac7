"""The exact engine's constant tables, computed without libm.

Every transcendental value the engine uses (2^-x, SiLU, GELU, cos/sin for RoPE) comes from
a table of integers defined here. The tables are computed with Python's `decimal` module
(arbitrary precision, correctly rounded exp/ln/sqrt in software) and rounded half-even to
integers, so they are the same on every machine, whatever its libm or CPU. Each table
is computed once per process (milliseconds to about a second) and cached.
"""

from __future__ import annotations

import functools
import threading
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


def _q30(c: Decimal, s: Decimal) -> tuple[int, int]:
    one = Decimal(1 << _ROPE_INNER)
    return _round(c * one), _round(s * one)


class _RopeFactors:
    """One frequency table's Q30 factors (the spec: `_q30(_cos_sin(theta * m))` at the
    angles m·theta, m = 0..63 for `lo` and m = 64h for `hi`), `hi` extended as positions
    grow. The spec's Taylor series costs ~40 decimal operations an angle, and Gemma's
    65,536 positions need 262,144 of them (15 s), so `hi` is computed otherwise with the
    same values: for h = 32a + b, cos and sin of 64h·theta come from those of 2048a·theta
    and 64b·theta (each a series, 40 digits, then exactly to integers in Q130) by
    cos(x+y) = cos x cos y - sin x sin y in exact integer arithmetic. That value is within
    10^-30 of the series' value at the same angle (both carry errors of ~10^-35 from
    rounding and reducing the angle), so the two round alike to Q30 unless it lies within
    2^-40 of a Q30 half-way point; there (about one entry in 10^12) the series decides."""

    _B = 32                                   # h = 32a + b
    _F = 130                                  # the exact products' fixed point (Q130)
    _GUARD = 40                               # the series decides within 2^-40 of a tie

    def __init__(self, head_dim: int, base: float, pos_scale: float):
        half = head_dim // 2
        with localcontext(_ctx()):
            lnb = Decimal(repr(float(base))).ln()
            scale = Decimal(repr(float(pos_scale)))
            self.theta = [(-(lnb * 2 * i) / head_dim).exp() / scale for i in range(half)]
            self.lo = np.array([[_q30(*_cos_sin(t * j)) for t in self.theta]
                                for j in range(_ROPE_LO)], dtype=np.int64).transpose(2, 0, 1)
            rows = [self._fixed_row(_ROPE_LO * b) for b in range(self._B)]
            self._b = tuple(np.array([r[k] for r in rows], dtype=object) for k in (0, 1))
        self._a: list = []                    # [a]: Q130 cos, sin of 2048a·theta_i
        self.hi = np.zeros((2, 0, half), dtype=np.int64)
        self.by_series = 0                    # entries of hi the guard sent to the series

    def _fixed_row(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin of m·theta_i for every i, in Q130: two arrays of Python ints."""
        one = Decimal(1 << self._F)
        cs = [_cos_sin(t * m) for t in self.theta]
        return tuple(np.array([_round(v[k] * one) for v in cs], dtype=object) for k in (0, 1))

    def extend(self, n_hi: int) -> None:
        have = self.hi.shape[1]
        if n_hi <= have:
            return
        n_hi = -(-n_hi // self._B) * self._B
        out = np.zeros((2, n_hi, len(self.theta)), dtype=np.int64)
        out[:, :have] = self.hi
        shift = 2 * self._F - _ROPE_INNER     # Q260 -> Q30
        half_unit, guard = 1 << (shift - 1), 1 << (shift - self._GUARD)
        mask = (1 << shift) - 1
        cb, sb = self._b                      # (32, D/2) objects: Python ints
        with localcontext(_ctx()):
            for a in range(have // self._B, n_hi // self._B):
                while len(self._a) <= a:
                    self._a.append(self._fixed_row(_ROPE_LO * self._B * len(self._a)))
                ca, sa = self._a[a]
                rows = slice(a * self._B, (a + 1) * self._B)
                for k, v in enumerate((ca * cb - sa * sb, sa * cb + ca * sb)):
                    out[k, rows] = ((v + half_unit) >> shift).astype(np.int64)
                    for b, i in zip(*np.nonzero(abs((v & mask) - half_unit) < guard)):
                        h = a * self._B + b
                        self.by_series += 1
                        out[k, h, i] = _q30(*_cos_sin(self.theta[i] * (_ROPE_LO * h)))[k]
        self.hi = out


_factors: dict = {}
_tables: dict = {}
_lock = threading.Lock()


def rope_tables(head_dim: int, base: float, n_pos: int, pos_scale: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of p * theta_i / pos_scale, theta_i = base^(-2i/D), in Q15:
    two int64 arrays (n_pos, D/2).

    Computed in two levels so only (64 + n_pos/64) angles per frequency are needed:
    p = 64h + l, cos(p t) = cos(64h t) cos(l t) - sin(64h t) sin(l t), both factors
    rounded to Q30 (see `_RopeFactors`), their products combined exactly in int64 and
    rounded once (half up) to Q15. An entry depends only on its position, so the largest
    table made so far is kept and smaller ones are views of its first rows."""
    key = (head_dim, float(base), float(pos_scale))
    with _lock:
        have = _tables.get(key)
        if have is None or have[0].shape[0] < n_pos:
            f = _factors.get(key)
            if f is None:
                f = _factors[key] = _RopeFactors(*key)
            n = max(n_pos, 2 * have[0].shape[0]) if have is not None else n_pos
            f.extend(-(-n // _ROPE_LO))
            have = _tables[key] = _combine(f.hi, f.lo, n)
    return have[0][:n_pos], have[1][:n_pos]


def rope_tables_spec(head_dim: int, base: float, n_pos: int, pos_scale: float = 1.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """`rope_tables` as the spec defines it, every factor by its own series (slow: for
    tests on small tables)."""
    half = head_dim // 2
    n_hi = -(-n_pos // _ROPE_LO)
    lo = np.zeros((2, _ROPE_LO, half), dtype=np.int64)
    hi = np.zeros((2, n_hi, half), dtype=np.int64)
    with localcontext(_ctx()):
        lnb = Decimal(repr(float(base))).ln()
        scale = Decimal(repr(float(pos_scale)))
        for i in range(half):
            theta = (-(lnb * 2 * i) / head_dim).exp() / scale
            for table, step, n in ((lo, 1, _ROPE_LO), (hi, _ROPE_LO, n_hi)):
                for j in range(n):
                    table[0, j, i], table[1, j, i] = _q30(*_cos_sin(theta * (j * step)))
    return _combine(hi, lo, n_pos)


def _combine(hi: np.ndarray, lo: np.ndarray, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """Q15 cos and sin (n_pos, D/2) of positions 64h + l from the Q30 factors (2, ., D/2)."""
    n_hi = -(-n_pos // _ROPE_LO)
    ch, sh = hi[0, :n_hi, None], hi[1, :n_hi, None]                   # (n_hi, 1, D/2)
    cl, sl = lo[0, None], lo[1, None]                                 # (1, 64, D/2)
    sh_ = 2 * _ROPE_INNER - ROPE_FRAC
    rnd = 1 << (sh_ - 1)
    out = []
    for a, b, c, d, sign in ((ch, cl, sh, sl, -1), (sh, cl, ch, sl, 1)):
        x = a * b                                                     # (n_hi, 64, D/2)
        x += sign * (c * d) + rnd
        x >>= sh_
        out.append(x.reshape(n_hi * _ROPE_LO, -1)[:n_pos])
    return out[0], out[1]
