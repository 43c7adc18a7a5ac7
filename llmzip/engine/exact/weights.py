"""Float weights -> the exact engine's integer weights, their hash, and their disk cache.

Each matrix W (N, K) becomes int8 rows q (one scale per output row, s_n = max|W_n| / 127,
q = rint(W / s_n)) and an integer multiplier per row M_n = rint(s_n * c * 2^sb), with sb
chosen so that max M_n <= 2^21 (c: 1; log2(e) for the output layer, whose logits are in
bits; the embedding scale for Gemma's input embedding). Norm gains become Q16 integers.

This step runs in float64 with IEEE basic operations only (division, multiplication by a
power of two, rint), on the float32 weights that gguf's reference dequantiser gives, so
it yields the same integers on every machine. The SHA-256 of all the integers is
recorded in every archive all the same: a decoder whose integers differ refuses it.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

QUANT_VERSION = 2                 # bump when the integers derived from a GGUF change
LOG2E = 1.4426950408889634        # the float64 nearest to log2(e)
MULT_BITS = 21                    # row multipliers are at most 2^21 (acc * mult <= 2^52)
GAIN_FRAC = 16                    # norm gains in Q16
ACC_LIMIT = (1 << 31) - 1         # matmul sums are int32
MAX_LEVELS = 32767                # matmul inputs are int16


@dataclass
class IntLinear:
    """y = x W^T in integers: int8 rows, a multiplier per row, and the input's bound."""
    w: torch.Tensor               # (N, K) int8
    mult: torch.Tensor            # (N,) int64, each <= 2^21
    sb: int                       # mult = rint(scale * c * 2^sb)
    levels: int                   # inputs are quantised to |a| <= levels, so that
                                  # sum_k |w_nk| * levels < 2^31 for every row n


def quantize_rows(W: np.ndarray, c: float = 1.0, block: int = 8192
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(int8 q (N, K), int64 multipliers (N,), sb) for float W (N, K), in row blocks."""
    N, K = W.shape
    q = np.empty((N, K), dtype=np.int8)
    scale = np.empty(N, dtype=np.float64)
    for i in range(0, N, block):
        w = W[i:i + block].astype(np.float64)
        s = np.abs(w).max(axis=1) / 127.0
        safe = np.where(s > 0, s, 1.0)
        q[i:i + block] = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
        scale[i:i + block] = s
    return q, *multipliers(scale, c)


def multipliers(scale: np.ndarray, c: float) -> tuple[np.ndarray, int]:
    """rint(scale * c * 2^sb) with the largest sb that keeps every value at most 2^21."""
    top = float((scale * c).max()) if scale.size else 0.0
    sb = MULT_BITS - (math.frexp(top)[1] if top > 0 else 0)   # top = m 2^e, m in [0.5, 1)
    return np.rint(np.ldexp(scale * c, sb)).astype(np.int64), sb


def levels_for(q: np.ndarray) -> int:
    """The most input levels that keep every row's int32 sum exact."""
    l1 = int(np.abs(q.astype(np.int32)).sum(axis=1, dtype=np.int64).max()) if q.size else 1
    return min(MAX_LEVELS, ACC_LIMIT // max(l1, 1))


def int_linear(W: torch.Tensor, c: float = 1.0) -> IntLinear:
    q, mult, sb = quantize_rows(W.detach().float().numpy(), c)
    return IntLinear(torch.from_numpy(q), torch.from_numpy(mult), sb, levels_for(q))


def int_gain(g: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.rint(np.ldexp(g.detach().double().numpy(), GAIN_FRAC))
                            .astype(np.int64))


@dataclass
class IntLayer:
    attn_norm: torch.Tensor       # (C,) int64 gains, Q16
    qkv: IntLinear                # (H + 2K) D rows: queries, keys, values
    o: IntLinear
    ffn_norm: torch.Tensor
    gate_up: IntLinear            # 2F rows: gate, then up
    down: IntLinear
    q_norm: torch.Tensor | None = None          # Gemma: per-head norms over D
    k_norm: torch.Tensor | None = None
    post_attn_norm: torch.Tensor | None = None  # Gemma: norms of the branch outputs
    post_ffn_norm: torch.Tensor | None = None
    window: int = 0               # sliding window (0: every earlier position)
    rope: str = "global"          # which RoPE table ("global" or "local")


@dataclass
class IntModel:
    arch: str                     # "llama" or "gemma3"
    cfg: object                   # the model's GPTConfig or GemmaConfig
    emb: IntLinear                # token embedding rows (multipliers give the input scale)
    head: IntLinear               # output layer (tied: the same int8 rows as emb)
    norm: torch.Tensor            # final norm gains
    layers: list = field(default_factory=list)
    attn_scale: float = 0.0       # multiplies q.k
    sha256: str = ""              # of every integer above (weights_hash)

    def linears(self):
        yield self.emb
        yield self.head
        for L in self.layers:
            yield from (L.qkv, L.o, L.gate_up, L.down)


def from_float(gpt) -> IntModel:
    """The integer model of a float GPT or Gemma built by the GGUF loader."""
    cfg = gpt.cfg
    gemma = hasattr(cfg, "sliding_layers")
    if gemma and cfg.final_softcap > 0:
        from ...errors import UnsupportedModelError
        raise UnsupportedModelError("final logit soft-capping (exact engine)", "")
    E = gpt.tok_emb.weight.detach().float().numpy()
    q, mult, sb = quantize_rows(E, cfg.embed_scale if gemma else 1.0)
    levels = levels_for(q)
    emb = IntLinear(torch.from_numpy(q), torch.from_numpy(mult), sb, levels)
    if gpt.lm_head is None:                           # tied: same rows, other multipliers
        s = np.abs(E.astype(np.float64)).max(axis=1) / 127.0
        hm, hsb = multipliers(s, LOG2E)
        head = IntLinear(emb.w, torch.from_numpy(hm), hsb, levels)
    else:
        head = int_linear(gpt.lm_head.weight, LOG2E)
    m = IntModel("gemma3" if gemma else "llama", cfg, emb, head, int_gain(gpt.norm.weight),
                 attn_scale=cfg.attn_scale if gemma else 1.0 / math.sqrt(cfg.head_dim))
    for i, b in enumerate(gpt.blocks):
        L = IntLayer(int_gain(b.attn_norm.weight), int_linear(b.attn.wqkv.weight),
                     int_linear(b.attn.wo.weight), int_gain(b.ffn_norm.weight),
                     int_linear(b.mlp.w_gate_up.weight), int_linear(b.mlp.w_down.weight))
        if gemma:
            L.q_norm, L.k_norm = int_gain(b.attn.q_norm.weight), int_gain(b.attn.k_norm.weight)
            L.post_attn_norm = int_gain(b.post_attn_norm.weight)
            L.post_ffn_norm = int_gain(b.post_ffn_norm.weight)
            L.window = b.attn.window
            L.rope = "local" if cfg.is_sliding(i) else "global"
        m.layers.append(L)
    m.sha256 = weights_hash(m)
    return m


def _fields(m: IntModel):
    """Every integer of the model, in a fixed order: (name, tensor or int)."""
    for name, lin in (("emb", m.emb), ("head", m.head)):
        yield from ((f"{name}.{k}", getattr(lin, k)) for k in ("w", "mult", "sb", "levels"))
    yield "norm", m.norm
    yield "attn_scale", m.attn_scale
    for i, L in enumerate(m.layers):
        for name in ("qkv", "o", "gate_up", "down"):
            lin = getattr(L, name)
            yield from ((f"{i}.{name}.{k}", getattr(lin, k))
                        for k in ("w", "mult", "sb", "levels"))
        for name in ("attn_norm", "ffn_norm", "q_norm", "k_norm", "post_attn_norm",
                     "post_ffn_norm", "window"):
            if getattr(L, name) is not None:
                yield f"{i}.{name}", getattr(L, name)
        yield f"{i}.rope", L.rope


def weights_hash(m: IntModel) -> str:
    """SHA-256 over every integer (and the few constants) that defines the model."""
    h = hashlib.sha256(f"llmzip exact weights v{QUANT_VERSION} {m.arch}".encode())
    for name, v in _fields(m):
        h.update(name.encode())
        if torch.is_tensor(v):
            a = np.ascontiguousarray(v.numpy())
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------- cache

def _cache_path(root: str, fingerprint: str) -> str:
    return os.path.join(root, f"{fingerprint[:32]}-exact-q{QUANT_VERSION}.pt")


def save(m: IntModel, root: str | None, fingerprint: str) -> None:
    """Write the integers to the cache folder (best effort: a read-only home is fine)."""
    if not root:
        return
    state = {name: v for name, v in _fields(m)}
    state["arch"], state["sha256"] = m.arch, m.sha256
    tmp = None
    try:
        os.makedirs(root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, _cache_path(root, fingerprint))
        tmp = None
    except OSError:
        pass
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def load(root: str | None, fingerprint: str, cfg) -> IntModel | None:
    """The cached integers of the model with this GGUF fingerprint, or None. A damaged
    cache file is ignored (its recomputed hash would not match) and rebuilt."""
    if not root or not os.path.isfile(_cache_path(root, fingerprint)):
        return None
    try:
        s = torch.load(_cache_path(root, fingerprint), mmap=True, weights_only=True)
        lin = lambda p: IntLinear(s[f"{p}.w"], s[f"{p}.mult"], s[f"{p}.sb"], s[f"{p}.levels"])
        m = IntModel(s["arch"], cfg, lin("emb"), lin("head"), s["norm"],
                     attn_scale=s["attn_scale"])
        if m.head.w.data_ptr() != m.emb.w.data_ptr() and torch.equal(m.head.w, m.emb.w):
            m.head.w = m.emb.w                        # tied rows: one copy in memory
        for i in range(cfg.n_layer):
            L = IntLayer(s[f"{i}.attn_norm"], lin(f"{i}.qkv"), lin(f"{i}.o"),
                         s[f"{i}.ffn_norm"], lin(f"{i}.gate_up"), lin(f"{i}.down"))
            for k in ("q_norm", "k_norm", "post_attn_norm", "post_ffn_norm", "window", "rope"):
                if f"{i}.{k}" in s:
                    setattr(L, k, s[f"{i}.{k}"])
            m.layers.append(L)
    except Exception:                                  # damaged or foreign: rebuild
        return None
    m.sha256 = weights_hash(m)
    return m if m.sha256 == s.get("sha256") else None
