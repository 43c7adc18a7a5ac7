"""Batched lockstep stepping with a KV cache in torch floats: the one code path encoder
and decoder share.

B independent segments (each starts from BOS) advance one token per step together. At
step t the model sees, for every segment, the token at position t (BOS at t = 0) and
returns logits for position t + 1; ``probs.logits_to_freqs`` turns them into integer
tables, and a ``choose`` callback gives the next token of every live segment: the
encoder's codes the true tokens with the tables, the decoder's decodes the tokens from
them (codec/lockstep.py). Both run the same function with the same shapes, so the tables
are bit-identical.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import LimitError
from .host import cpu_flags
from .probs import PRECISION, logits_to_freqs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# how a step attends over the KV cache: torch's float32 bmm over a float32 cache (every
# archive before format 3), or llmzip's own kernel over a bfloat16 cache (kernels/)
ATTENTIONS = ("torch-f32", "bf16-kernel")


def resolve_attention(attention: str) -> str:
    """"auto" -> "bf16-kernel" where llmzip's attention kernel builds (a C compiler is
    there), else "torch-f32"; any other name is returned as it is (checked by the caller).

    The kernel reads half the bytes per cached position; on this project's 2-core machine
    it made the default alice29.txt run 1.7x faster both ways, side by side (730 / 769
    against 422 / 444 B/s), for 0.00003 bits/byte (README, "Measured results")."""
    if attention != "auto":
        return attention
    from . import kernels
    return "bf16-kernel" if kernels.available() else "torch-f32"


def resolve_dtype(dtype: str) -> str:
    """"auto" -> "bfloat16" where the CPU has native bf16 dot products (AVX512-BF16 or
    AMX), else "float32"; any other name is returned as it is (checked by the caller).

    On this project's AVX512-BF16 machine bf16 runs the model's matmuls about 2x faster
    than float32 and costs 0.0002 bits/byte on alice29.txt (README, "Measured")."""
    if dtype != "auto":
        return dtype
    flags = cpu_flags().split(",")
    return "bfloat16" if "avx512_bf16" in flags or "amx_bf16" in flags else "float32"


@dataclass(frozen=True)
class EngineProfile:
    """Everything besides the model that the probabilities depend on."""
    dtype: str = "float32"       # weights/activations dtype (attention arithmetic: float32)
    attention: str = "torch-f32"  # KV cache and attention kernel (ATTENTIONS); archives
                                  # that do not name one used torch-f32
    threads: int = 1             # torch intra-op threads while stepping
    precision: int = PRECISION   # bits of the integer frequency tables
    seg_len: int = 2048          # most tokens in one segment (BOS not counted)
    batch: int = 64              # most segments stepped together
    torch: str = torch.__version__
    constriction: str = ""
    cpu: str = ""

    @classmethod
    def make(cls, **kw) -> "EngineProfile":
        from importlib.metadata import version
        kw.setdefault("constriction", version("constriction"))
        kw.setdefault("cpu", cpu_flags())
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Engine:
    """Owns a model in one dtype and runs lockstep passes over batches of segments."""

    kind = "float"

    def __init__(self, model, profile: EngineProfile, memory_limit: int = 8 << 30):
        if profile.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
        if profile.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}")
        self.model = model                      # registry.LoadedModel
        self.profile = profile
        self.memory_limit = memory_limit

    def kv_bytes(self, batch: int, length: int) -> int:
        c = self.model.config
        per_value = 2 if self.profile.attention == "bf16-kernel" else 4
        return 2 * c.n_layer * batch * c.n_kv_head * length * c.head_dim * per_value

    def check_shape(self, lengths: list[int]) -> None:
        ctx = self.model.config.context_length
        if any(n > ctx - 1 for n in lengths):
            raise LimitError("segment length", max(lengths), ctx - 1,
                             "the model's context window (BOS included) is the maximum")
        need = self.kv_bytes(len(lengths), max(lengths, default=0))
        if need > self.memory_limit:
            raise LimitError("KV cache memory", need, self.memory_limit,
                             f"raise it with --memory-limit {(need >> 20) + 1}M")

    def lockstep(self, lengths: list[int], choose, progress=None) -> None:
        """Run len(lengths) segments in lockstep; segment i gets lengths[i] tokens.

        At step t, choose(t, live, freqs) gets the segments still running (the indices i
        with lengths[i] > t, ascending) and, row k for segment live[k], the integer
        frequency table of its token t (after BOS and its tokens 0..t-1). It returns
        those tokens (len(live) ids), which the next step feeds to the model; then
        progress(tokens) is called, if given.
        """
        self.check_shape(lengths)
        B, T = len(lengths), max(lengths, default=0)
        if T == 0:
            return
        gpt = self.model.gpt(DTYPES[self.profile.dtype])
        from .models.gpt import KernelKVCache, KVCache
        if self.profile.attention == "bf16-kernel":
            cache = KernelKVCache(self.model.config, B, T, self.profile.threads)
        else:
            cache = KVCache(self.model.config, B, T)
        lens = np.asarray(lengths)
        inp = torch.full((B, 1), self.model.bos_id, dtype=torch.long)
        with torch_threads(self.profile.threads), torch.inference_mode():
            for t in range(T):
                logits = gpt(inp, cache, t)[:, 0]             # (B, V) float32
                freqs = logits_to_freqs(logits, self.profile.precision)
                live = np.nonzero(lens > t)[0]
                tokens = choose(t, live, freqs[live])         # (len(live),)
                nxt = np.full(B, self.model.bos_id, dtype=np.int64)
                nxt[live] = tokens
                inp = torch.from_numpy(nxt)[:, None]
                if progress is not None:
                    progress(tokens)
