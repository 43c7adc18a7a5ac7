"""A Gemma 3 (text) transformer in one readable file, in the style of gpt.py.

Differences from the Llama GPT in gpt.py:
- token embeddings are multiplied by sqrt(C) on the way in (the output layer, tied to the
  same matrix, is not);
- Gemma's RMSNorm multiplies by (1 + w); llama.cpp's converter stores 1 + w in the GGUF,
  so the weights loaded here are used as they are (RMSNorm of gpt.py);
- queries and keys get their own RMSNorm per head (over D) before RoPE;
- the attention and MLP outputs are normalised again before they join the residual
  stream (post-attention and post-feed-forward norms);
- the MLP is GELU(tanh)-gated: down(gelu(gate(x)) * up(x));
- RoPE rotates the two halves of a head (the "NEOX" layout llama.cpp uses for Gemma; its
  converter does not permute Gemma's Q/K weights);
- most layers attend only to a sliding window of recent positions and use their own RoPE
  base; the others attend to everything;
- attention scores are scaled by a configured factor (1/sqrt(query_pre_attn_scalar)),
  and final logits may be soft-capped: cap * tanh(logits / cap).

Shapes: B = batch, T = time (new tokens), S = positions attended (cache + new),
C = model width, H = query heads, K = kv heads, G = H // K, D = head size, V = vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gpt import KernelKVCache, KVCache, RMSNorm, RopeModel


@dataclass(frozen=True)
class GemmaConfig:
    vocab_size: int = 262144          # V: number of token ids the output layer scores
    n_layer: int = 18                 # transformer blocks
    n_embd: int = 640                 # C: residual stream width
    n_head: int = 4                   # H: query heads
    n_kv_head: int = 1                # K: key/value heads (H % K == 0)
    head_dim: int = 256               # D: size of one head (n_head * head_dim may differ from C)
    ffn_hidden: int = 2048            # width of the GELU-gated MLP
    norm_eps: float = 1e-6            # RMSNorm epsilon (all norms)
    rope_base: float = 1_000_000.0    # RoPE base of the global (full-attention) layers
    rope_base_local: float = 10_000.0  # RoPE base of the sliding-window layers
    rope_scale: float = 1.0           # linear RoPE scaling of the global layers (positions / s)
    sliding_window: int = 512         # W: a sliding layer's query at i sees keys j, i - W < j <= i
    sliding_layers: tuple = ()        # per layer: True = sliding window, False = global
    attn_scale: float = 1 / 16        # multiplies q.k (1/sqrt(query_pre_attn_scalar))
    embed_scale: float = math.sqrt(640)  # multiplies token embeddings on input
    final_softcap: float = 0.0        # logits -> cap * tanh(logits / cap) if > 0
    context_length: int = 32768       # longest sequence the model was trained for
    tie_embeddings: bool = True       # output layer reuses the token embedding matrix

    def to_dict(self) -> dict:
        return asdict(self)

    def is_sliding(self, layer: int) -> bool:
        return bool(self.sliding_layers[layer]) if self.sliding_layers else False

    def n_params(self) -> int:
        C, D, V = self.n_embd, self.head_dim, self.vocab_size
        attn = C * self.n_head * D * 2 + C * self.n_kv_head * D * 2 + 2 * D
        block = attn + 3 * C * self.ffn_hidden + 4 * C
        out = 0 if self.tie_embeddings else V * C
        return V * C + self.n_layer * block + C + out


def rope_tables(head_dim: int, base: float, length: int, scale: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (length, D/2), computed in float64 then rounded to float32."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = (torch.arange(length, dtype=torch.float64) / scale)[:, None] * inv[None, :]
    return ang.cos().float(), ang.sin().float()


def apply_rope_halves(x, cos, sin):
    """Rotate pairs (x[i], x[i + D/2]) in float32, whatever x's dtype.
    x: (B, T, h, D); cos/sin: (T, D/2) float32. Returns float32."""
    a, b = x.float().chunk(2, dim=-1)                                  # (B, T, h, D/2) each
    cos, sin = cos[:, None, :].float(), sin[:, None, :].float()        # (T, 1, D/2)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """True where a query may look at a key: causal, and within `window` if window > 0.
    q_pos: (Tq,), k_pos: (S,) absolute positions -> (Tq, S) bool."""
    ok = k_pos[None, :] <= q_pos[:, None]
    if window > 0:
        ok &= k_pos[None, :] > q_pos[:, None] - window
    return ok


class Attention(nn.Module):
    def __init__(self, cfg: GemmaConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.window = cfg.sliding_window if cfg.is_sliding(layer) else 0
        C, H, K, D = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.wqkv = nn.Linear(C, (H + 2 * K) * D, bias=False)   # q, k, v projections fused
        self.q_norm = RMSNorm(D, cfg.norm_eps)                  # per head, over D
        self.k_norm = RMSNorm(D, cfg.norm_eps)
        self.wo = nn.Linear(H * D, C, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None, layer: int, pos: int):
        B, T, _ = x.shape
        H, K, D = self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim
        qkv = self.wqkv(x).view(B, T, H + 2 * K, D)
        q = apply_rope_halves(self.q_norm(qkv[:, :, :H]), cos, sin).transpose(1, 2)  # (B,H,T,D)
        k = apply_rope_halves(self.k_norm(qkv[:, :, H:H + K]), cos, sin).transpose(1, 2)
        v = qkv[:, :, H + K:].transpose(1, 2).float()                                # (B,K,T,D)
        if isinstance(cache, KernelKVCache):
            y = cache.attend(layer, q, k, v, pos, self.cfg.attn_scale, self.window)
            return self.wo(y.transpose(1, 2).reshape(B, T, H * D).to(x.dtype))
        lo = 0                                   # absolute position of the first key in k/v
        if cache is not None:
            cache.k[layer][:, :, pos:pos + T] = k
            cache.v[layer][:, :, pos:pos + T] = v
            if self.window:                      # keys no query of this block can see
                lo = max(0, pos - self.window + 1)   # stay out (masking, cheaply)
            k = cache.k[layer][:, :, lo:pos + T]     # (B, K, S, D)
            v = cache.v[layer][:, :, lo:pos + T]
        S = k.shape[2]
        scale = self.cfg.attn_scale
        if cache is None and T > 1 and torch.is_inference_mode_enabled():
            # scoring a whole sequence (score.py): fused attention kernel
            if self.window and T > self.window:
                mask = attention_mask(torch.arange(T), torch.arange(T), self.window)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                                   enable_gqa=K < H)
            else:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                   enable_gqa=K < H)
            return self.wo(y.transpose(1, 2).reshape(B, T, H * D).to(x.dtype))
        G = H // K
        # attention in the cache's dtype (float32): group the G query heads of each kv head
        q = q.reshape(B, K, G * T, D).to(k.dtype)                # (B, K, G*T, D)
        att = (q @ k.transpose(-2, -1)) * scale                  # (B, K, G*T, S)
        q_pos = torch.arange(pos, pos + T)
        k_pos = torch.arange(lo, lo + S)
        if T > 1:        # one query (T == 1) already sees exactly keys lo..pos: no mask
            ok = attention_mask(q_pos, k_pos, self.window).repeat(G, 1)   # (G*T, S)
            att = att.masked_fill(~ok, float("-inf"))
        y = torch.softmax(att, dim=-1) @ v                       # (B, K, G*T, D)
        y = y.view(B, H, T, D).transpose(1, 2).reshape(B, T, H * D).to(x.dtype)
        return self.wo(y)


class MLP(nn.Module):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.hidden = cfg.ffn_hidden
        self.w_gate_up = nn.Linear(cfg.n_embd, 2 * cfg.ffn_hidden, bias=False)  # fused
        self.w_down = nn.Linear(cfg.ffn_hidden, cfg.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.w_gate_up(x).split(self.hidden, dim=-1)
        return self.w_down(F.gelu(gate, approximate="tanh") * up)


class Block(nn.Module):
    def __init__(self, cfg: GemmaConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.post_attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.post_ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)

    def forward(self, x, cos, sin, cache, layer, pos):
        x = x + self.post_attn_norm(self.attn(self.attn_norm(x), cos, sin, cache, layer, pos))
        return x + self.post_ffn_norm(self.mlp(self.ffn_norm(x)))


class Gemma(RopeModel):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        if cfg.sliding_layers and len(cfg.sliding_layers) != cfg.n_layer:
            raise ValueError("sliding_layers needs one entry per layer")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.n_embd, cfg.vocab_size,
                                                                 bias=False)
        self.make_buffers()

    def make_buffers(self) -> None:
        """RoPE tables (not saved with the weights): global and sliding-window layers."""
        cfg = self.cfg
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_base, cfg.context_length, cfg.rope_scale)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_base_local, cfg.context_length)
        self.register_buffer("rope_cos_local", cos, persistent=False)
        self.register_buffer("rope_sin_local", sin, persistent=False)

    def forward(self, idx, cache: KVCache | None = None, pos: int = 0):
        """idx: (B, T) token ids starting at position `pos` -> logits (B, T, V) in float32."""
        B, T = idx.shape
        if pos + T > self.cfg.context_length:
            raise ValueError(f"position {pos + T} beyond context {self.cfg.context_length}")
        x = self.tok_emb(idx) * self.cfg.embed_scale                      # (B, T, C)
        glob = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        local = self.rope_cos_local[pos:pos + T], self.rope_sin_local[pos:pos + T]
        for i, block in enumerate(self.blocks):
            cos, sin = local if self.cfg.is_sliding(i) else glob
            x = block(x, cos, sin, cache, i, pos)
        x = self.norm(x)
        logits = F.linear(x, self.output_weight()).float()               # (B, T, V)
        if self.cfg.final_softcap > 0:
            cap = self.cfg.final_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits
