"""Integer building blocks of the exact engine (docs/engine.md names each one).

Plain torch int64 code, written for reading; every function is exact, so it gives the
same integers for any batch shape, thread count or device.
"""

from __future__ import annotations

import torch

from . import tables as T


def rshift_round(v: torch.Tensor, sh) -> torch.Tensor:
    """floor((v + 2^(sh-1)) / 2^sh): divide by 2^sh, rounding halves up; sh <= 0 is an
    exact left shift by -sh. `sh` is an int or an int64 tensor broadcastable to v."""
    if not torch.is_tensor(sh):
        if sh <= 0:
            return v << -sh
        return (v + (1 << (sh - 1))) >> sh
    right, left = sh.clamp(min=0), (-sh).clamp(min=0)       # one of them is 0
    return ((v << left) + ((torch.ones_like(right) << right) >> 1)) >> right


def shift_floor(v: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """floor(v * 2^-sh) for int64 tensors: v >> sh, or v << -sh where sh < 0."""
    return torch.where(sh >= 0, v >> sh.clamp(min=0), v << (-sh).clamp(min=0))


def bit_length(m: torch.Tensor) -> torch.Tensor:
    """Number of bits of each m >= 0 (0 for 0); m < 2^53 (exact through float64)."""
    return torch.frexp(m.double())[1].long()


def quant_pow2(y: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row (last dim): the smallest e >= 0 with |rshift_round(y, e)| <= levels, and
    rshift_round(y, e). Returns (q (..., K), e (..., 1)), both int64."""
    m = y.abs().amax(-1, keepdim=True)
    e = (bit_length(m) - bit_length(torch.tensor(levels))).clamp(min=0)
    for _ in range(3):                               # at most two steps are ever needed
        e = e + (rshift_round(m, e) > levels).long()
    return rshift_round(y, e), e


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) of int64 n in [0, 2^62], exactly: a float64 guess (within 1 of the
    answer), then one correction each way in integers."""
    r = torch.sqrt(n.double()).floor().long()
    r = r - (r * r > n).long()
    return r + ((r + 1) * (r + 1) <= n).long()


def floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def round_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b rounded half up, b > 0."""
    return floor_div(2 * a + b, 2 * b)


def exp2_neg(d: torch.Tensor) -> torch.Tensor:
    """2^30 * 2^(-d/1024) for int64 d >= 0, from the table: EXP2[d % 1024] >> (d // 1024)
    (0 once the shift reaches 63)."""
    table = torch.from_numpy(T.exp2_table())
    return table[d & 1023] >> (d >> 10).clamp(max=63)


def lut_activation(x: torch.Tensor, name: str, frac: int) -> torch.Tensor:
    """f(x) for x in Q`frac` (frac >= 6), by linear interpolation between the Q16 knots
    f(i/64); result in Q`frac`. Below -16: the last knot (f(-16)); from 16 up: x itself."""
    table = torch.from_numpy(T.activation_table(name))
    n = T.ACT_RANGE << T.ACT_STEP
    step = frac - T.ACT_STEP                         # fraction bits below one knot step
    i = x >> step                                    # knot at or below x
    f = x & ((1 << step) - 1)
    idx = (i + n).clamp(0, 2 * n - 1)
    lo, hi = table[idx], table[idx + 1]
    y = rshift_round(lo * (1 << step) + (hi - lo) * f, T.ACT_FRAC - T.ACT_STEP)  # Q`frac`
    y = torch.where(i < -n, rshift_round(table[0], T.ACT_FRAC - frac).expand_as(x), y)
    return torch.where(i >= n, x, y)
