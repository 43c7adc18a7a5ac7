"""Ideal bits of token ids under a model: sum(-log2 p(token)), no coding.

With ``stride=None`` the ids are cut into independent chunks of ``context - 1`` tokens,
each scored after a BOS with one full-sequence forward: the same context every token gets
from `llmzip compress` with segments of that length. With a ``stride`` < context - 1,
windows of ``context - 1`` tokens (after a BOS) move by ``stride`` tokens and each window
scores only the tokens no earlier window scored, so every token but the first window's
sees at least ``context - 1 - stride`` tokens of context.

`llmzip eval` (tools/evaluate.py) and `--model auto` (codec/api.choose_auto) use it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .float_engine import DTYPES, resolve_dtype, torch_threads


def _windows(n: int, width: int, stride: int | None):
    """(start, end, first_scored) windows over n tokens."""
    if stride is None or stride >= width:
        return [(i, min(i + width, n), i) for i in range(0, n, width)]
    out, start = [], 0
    while True:
        end = min(start + width, n)
        out.append((start, end, out[-1][1] if out else 0))
        if end >= n:
            return out
        start += stride


def token_bits(model, ids: np.ndarray, context: int = 2048, dtype: str = "auto",
               threads: int = 1, stride: int | None = None) -> np.ndarray:
    """-log2 p of every token (see the module docstring for chunks and windows)."""
    gpt = model.gpt(DTYPES[resolve_dtype(dtype)])
    out = np.zeros(len(ids), dtype=np.float64)
    with torch_threads(threads), torch.inference_mode():
        for start, end, first in _windows(len(ids), context - 1, stride):
            x = torch.empty((1, end - start + 1), dtype=torch.long)
            x[0, 0] = model.bos_id
            x[0, 1:] = torch.from_numpy(np.asarray(ids[start:end]))
            logits = gpt(x[:, :-1])[0]                               # (L, V) float32
            # log p(target) = logit(target) - logsumexp(logits), in float64 per position
            lse = torch.logsumexp(logits, dim=-1).double()            # (L,)
            lp = logits.gather(-1, x[0, 1:, None])[:, 0].double() - lse
            out[first:end] = -lp[first - start:].numpy() / math.log(2)
    return out
