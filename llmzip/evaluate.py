"""Ideal bits per byte of a model on a text: the fast measurement path (no coding).

The text is tokenized exactly as compress does, cut into chunks of ``context - 1``
tokens, each scored after a BOS with one full-sequence forward. The result is
sum(-log2 p(token)) / bytes: what an ideal coder would spend with these probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .engine import DTYPES, torch_threads


@dataclass
class EvalResult:
    bytes: int
    tokens: int
    bits: float
    seconds: float

    @property
    def bits_per_byte(self) -> float:
        return self.bits / self.bytes if self.bytes else 0.0

    @property
    def bits_per_token(self) -> float:
        return self.bits / self.tokens if self.tokens else 0.0


def token_bits(model, ids: np.ndarray, context: int = 2048, dtype: str = "float32",
               threads: int = 1, batch: int = 1) -> np.ndarray:
    """-log2 p of every token, chunks of context-1 tokens each scored after a BOS."""
    gpt = model.gpt(DTYPES[dtype])
    n = context - 1
    chunks = [ids[i:i + n] for i in range(0, len(ids), n)]
    out = np.zeros(len(ids), dtype=np.float64)
    pos = 0
    with torch_threads(threads), torch.inference_mode():
        for i in range(0, len(chunks), batch):
            group = chunks[i:i + batch]
            L = max(len(c) for c in group)
            x = torch.full((len(group), L + 1), model.bos_id, dtype=torch.long)
            for r, c in enumerate(group):
                x[r, 1:len(c) + 1] = torch.from_numpy(c)
            logits = gpt(x[:, :-1])                                   # (b, L, V) float32
            # log p(target) = logit(target) - logsumexp(logits), in float64 per position
            lse = torch.logsumexp(logits, dim=-1).double()            # (b, L)
            tgt = logits.gather(-1, x[:, 1:, None])[..., 0].double() - lse
            for r, c in enumerate(group):
                out[pos:pos + len(c)] = -tgt[r, :len(c)].numpy() / np.log(2)
                pos += len(c)
    return out


def evaluate(model, data: bytes, context: int = 2048, dtype: str = "float32",
             threads: int = 1) -> EvalResult:
    import time
    t0 = time.perf_counter()
    ids = model.tokenizer.encode(data)
    bits = token_bits(model, ids, context, dtype, threads)
    return EvalResult(len(data), len(ids), float(bits.sum()), time.perf_counter() - t0)
