"""The single float -> integer boundary: logits to integer symbol frequencies.

Encoder and decoder both call ``logits_to_freqs`` on bit-identical logits, so they get
bit-identical tables. Every symbol gets at least frequency 1 and each row sums exactly
to ``2**precision``.
"""

from __future__ import annotations

import numpy as np
import torch

PRECISION = 24              # bits; constriction's default range coder works at 24 bits
TOTAL = 1 << PRECISION


def logits_to_freqs(logits: torch.Tensor, precision: int = PRECISION) -> np.ndarray:
    """logits (B, V) float -> frequencies (B, V) int64, each >= 1, each row summing to 2**p.

    freq = 1 + floor(p * (2**precision - V)), then the rounding remainder (< V) goes to the
    most probable symbol. Computed in float64 with fixed-shape torch ops (deterministic for
    the same shapes on the same machine and library versions).
    """
    B, V = logits.shape
    spare = (1 << precision) - V
    if spare <= 0:
        raise ValueError(f"precision {precision} too low for a vocabulary of {V}")
    p = torch.softmax(logits.to(torch.float64), dim=-1)             # (B, V)
    freqs = torch.floor(p * spare).to(torch.int64) + 1               # (B, V) >= 1
    remainder = (1 << precision) - freqs.sum(dim=-1)                 # (B,) in [0, V]
    top = torch.argmax(p, dim=-1)                                    # (B,)
    freqs[torch.arange(B), top] += remainder
    return freqs.numpy()


def bits_of(freqs: np.ndarray, symbols: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Exact information content -log2(freq / 2**p) of each symbol under its row."""
    f = freqs[np.arange(len(symbols)), symbols].astype(np.float64)
    return precision - np.log2(f)
