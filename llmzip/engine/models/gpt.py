"""A Llama-architecture GPT in one readable file (in the spirit of nanoGPT's model.py).

RMSNorm, rotary position embeddings on adjacent pairs (the layout llama.cpp stores Q/K
weights in), grouped-query attention, SwiGLU MLP, optionally tied input/output embeddings.
Shapes: B = batch, T = time, C = model width, H = query heads, K = kv heads,
G = H // K (query heads per kv head), D = head size, V = vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 49152      # V: number of token ids the output layer scores
    n_layer: int = 30            # transformer blocks
    n_embd: int = 576            # C: residual stream width
    n_head: int = 9              # H: query heads
    n_kv_head: int = 3           # K: key/value heads (H % K == 0; K < H is grouped-query)
    head_dim: int = 64           # D: size of one head (n_head * head_dim may differ from C)
    ffn_hidden: int = 1536       # SwiGLU hidden width
    norm_eps: float = 1e-5       # RMSNorm epsilon
    rope_base: float = 100000.0  # RoPE frequency base
    context_length: int = 8192   # longest sequence the model was trained for
    tie_embeddings: bool = True  # output layer reuses the token embedding matrix

    def to_dict(self) -> dict:
        return asdict(self)

    def n_params(self) -> int:
        C, D, V = self.n_embd, self.head_dim, self.vocab_size
        attn = C * self.n_head * D * 2 + C * self.n_kv_head * D * 2
        block = attn + 3 * C * self.ffn_hidden + 2 * C
        out = 0 if self.tie_embeddings else V * C
        return V * C + self.n_layer * block + C + out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(head_dim: int, base: float, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (length, D/2), computed in float64 then rounded to float32."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float(), ang.sin().float()


def apply_rope(x, cos, sin):
    """Rotate adjacent pairs (x[2i], x[2i+1]) in float32, whatever x's dtype.
    x: (B, T, h, D); cos/sin: (T, D/2) float32. Returns float32."""
    x2 = x.float().unflatten(-1, (-1, 2))            # (B, T, h, D/2, 2)
    a, b = x2[..., 0], x2[..., 1]
    cos, sin = cos[:, None, :].float(), sin[:, None, :].float()   # (T, 1, D/2)
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class _CachedKV:
    """What both caches share: per-layer lists of tensors self.k and self.v."""

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class KVCache(_CachedKV):
    """Preallocated keys and values for every layer: each (B, K, T_max, D)."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int,
                 dtype: torch.dtype = torch.float32):
        shape = (batch, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.max_len = max_len


class KernelKVCache(_CachedKV):
    """Keys and values in bfloat16 in the layout of llmzip's attention kernel
    (llmzip/engine/kernels/attend_bf16.c): keys (B, K, T_max/16, D, 16), values
    (B, K, T_max, D), T_max rounded up to a multiple of 16 and D to a multiple of 16 (zero padding: adds
    exact zeros to every dot product). Half the bytes of KVCache to read per step, and
    attention whose arithmetic is fixed by our source and independent of `threads`."""

    def __init__(self, cfg, batch: int, max_len: int, threads: int = 1):
        from .. import kernels
        kernels.load()                      # fail here, clearly, if it cannot be built
        self.tile = kernels.TILE
        T = -(-max(max_len, 1) // self.tile) * self.tile
        K, D = cfg.n_kv_head, -(-cfg.head_dim // self.tile) * self.tile
        self.k = [torch.zeros((batch, K, T // self.tile, D, self.tile), dtype=torch.bfloat16)
                  for _ in range(cfg.n_layer)]
        self.v = [torch.zeros((batch, K, T, D), dtype=torch.bfloat16)
                  for _ in range(cfg.n_layer)]
        self.max_len, self.threads = T, threads

    def attend(self, layer: int, q, k, v, pos: int, scale: float, window: int = 0):
        """Store the new keys/values of positions pos..pos+T-1, then attend each query
        causally (over the last `window` positions when window > 0).
        q: (B, H, T, D) float32; k, v: (B, K, T, D). Returns (B, H, T, D) float32."""
        from ..kernels import attend_bf16
        B, H, T, D = q.shape
        K, pad = k.shape[1], self.v[layer].shape[-1] - D
        if pad:                                                          # D -> multiple of 16
            q, k, v = (F.pad(a, (0, pad)) for a in (q, k, v))
        kc, vc = self.k[layer], self.v[layer]
        for t in range(T):
            p = pos + t
            kc[:, :, p // self.tile, :, p % self.tile] = k[:, :, t]     # rounds to bf16
            vc[:, :, p] = v[:, :, t]
        ys = []
        for t in range(T):
            p = pos + t
            lo = max(0, p - window + 1) if window else 0
            qt = q[:, :, t].reshape(B, K, H // K, D + pad)                # (B, K, G, D)
            ys.append(attend_bf16(qt, kc, vc, lo, p + 1, scale, self.threads))
        y = torch.stack(ys, dim=2).view(B, H, T, D + pad)
        return y[..., :D] if pad else y                                  # (B, H, T, D)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        C, H, K, D = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.wqkv = nn.Linear(C, (H + 2 * K) * D, bias=False)   # q, k, v projections fused
        self.wo = nn.Linear(H * D, C, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None, layer: int, pos: int):
        B, T, _ = x.shape
        H, K, D = self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim
        qkv = self.wqkv(x).view(B, T, H + 2 * K, D)
        qk = apply_rope(qkv[:, :, :H + K], cos, sin)         # (B, T, H+K, D)
        q = qk[:, :, :H].transpose(1, 2)                     # (B, H, T, D)
        k = qk[:, :, H:].transpose(1, 2)                     # (B, K, T, D)
        v = qkv[:, :, H + K:].transpose(1, 2).float()        # (B, K, T, D) float32
        if isinstance(cache, KernelKVCache):
            y = cache.attend(layer, q, k, v, pos, 1.0 / math.sqrt(D))   # (B, H, T, D)
            return self.wo(y.transpose(1, 2).reshape(B, T, H * D).to(x.dtype))
        if cache is not None:
            cache.k[layer][:, :, pos:pos + T] = k
            cache.v[layer][:, :, pos:pos + T] = v
            k = cache.k[layer][:, :, :pos + T]               # (B, K, S, D), S = pos + T
            v = cache.v[layer][:, :, :pos + T]
        if cache is None and T > 1 and torch.is_inference_mode_enabled():
            # scoring a whole sequence (score.py): the fused causal kernel skips the
            # masked half and never materialises (T, T) scores
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=K < H)
            return self.wo(y.transpose(1, 2).reshape(B, T, H * D).to(x.dtype))
        S, G = k.shape[2], H // K
        # attention in the cache's dtype (float32): group the G query heads of each kv head
        q = q.reshape(B, K, G * T, D).to(k.dtype)            # (B, K, G*T, D)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))   # (B, K, G*T, S)
        if T > 1:
            qpos = torch.arange(T).repeat(G) + (S - T)       # position of each query row
            future = torch.arange(S)[None, :] > qpos[:, None]     # (G*T, S)
            att = att.masked_fill(future, float("-inf"))
        y = torch.softmax(att, dim=-1) @ v                   # (B, K, G*T, D)
        y = y.view(B, H, T, D).transpose(1, 2).reshape(B, T, H * D).to(x.dtype)
        return self.wo(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.hidden = cfg.ffn_hidden
        self.w_gate_up = nn.Linear(cfg.n_embd, 2 * cfg.ffn_hidden, bias=False)  # fused
        self.w_down = nn.Linear(cfg.ffn_hidden, cfg.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.w_gate_up(x).split(self.hidden, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache, layer, pos):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer, pos)
        return x + self.mlp(self.ffn_norm(x))


class RopeModel(nn.Module):
    """What GPT and Gemma share: seeded initialisation and float32 RoPE tables."""

    def output_weight(self) -> torch.Tensor:
        """The output layer: the token embedding when tied."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def init_random(self, seed: int, std: float = 0.02):
        """Deterministic random initialisation (for tests and online training)."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * std)
        return self

    def _apply(self, fn, recurse=True):
        """Casting the model (e.g. .to(torch.bfloat16)) leaves the RoPE tables float32."""
        keep = {n: b for n, b in self.named_buffers(recurse=False) if n.startswith("rope_")}
        super()._apply(fn, recurse)
        for n, b in keep.items():
            if getattr(self, n).dtype != b.dtype and not b.is_meta:
                setattr(self, n, b)
        return self


class GPT(RopeModel):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.n_embd, cfg.vocab_size,
                                                                 bias=False)
        self.make_buffers()

    def make_buffers(self) -> None:
        """RoPE tables (not saved with the weights; rebuilt after loading on meta)."""
        cfg = self.cfg
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_base, cfg.context_length)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx, cache: KVCache | None = None, pos: int = 0):
        """idx: (B, T) token ids starting at position `pos` -> logits (B, T, V) in float32."""
        B, T = idx.shape
        if pos + T > self.cfg.context_length:
            raise ValueError(f"position {pos + T} beyond context {self.cfg.context_length}")
        x = self.tok_emb(idx)                               # (B, T, C)
        cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i, pos)
        x = self.norm(x)
        return F.linear(x, self.output_weight()).float()   # (B, T, V)
