"""The exact engine's fast forward pass: the reference's arithmetic (reference.py), run by
llmzip's C kernels (kernels.py) on rows of (segment, position) pairs.

Any set of rows can be computed together: B segments x T new positions for the encoder's
prefill, one position of each live segment for the decoder's step. Each row's result
depends only on its own inputs and the cached keys and values of its segment, never on
which other rows ran with it, so both give the reference's integers bit for bit.
"""

from __future__ import annotations

import copy
import ctypes
import math
import threading

import numpy as np
import torch

from . import tables as T
from .kernels import Kernels, StepCache, StepLayer, p
from .reference import (ACT_FRAC, LOGIT_FRAC, RES_FRAC, SCORE_SHIFT, RopeTables,
                        copy_model, score_multiplier)
from .weights import IntModel

ROW_CHUNK = 256     # rows per pass of a layer's row-wise work (any value gives the same integers)
# At most this many rows (one chunk) go through all layers in one C call (exact_step.c),
# the same kernels in the same order as the Python loop below; 0: never (tests compare)
FUSED_ROWS = ROW_CHUNK


class KVCache:
    """Keys and values of every layer for B segments of up to Smax positions (a multiple
    of 16): int8 keys in exact_ops.c's tiles of 16 positions (B, K, Smax, D) with their
    score multipliers as float64 (B, K, Smax), int8 values (B, K, Smax, D) with their
    scales as float64. Every float64 here holds an exact integer times a power of two."""

    def __init__(self, cfg, n_layer: int, batch: int, max_len: int):
        max_len = -(-max(max_len, 1) // 16) * 16
        shape = (batch, cfg.n_kv_head, max_len, cfg.head_dim)
        self.kt = [torch.zeros(shape, dtype=torch.int8) for _ in range(n_layer)]
        self.vq = [torch.zeros(shape, dtype=torch.int8) for _ in range(n_layer)]
        self.ksd = [torch.zeros(shape[:3], dtype=torch.float64) for _ in range(n_layer)]
        self.vsd = [torch.zeros(shape[:3], dtype=torch.float64) for _ in range(n_layer)]
        self.batch, self.max_len = batch, max_len
        self._step = None

    def step_struct(self) -> StepCache:
        """The cache as exact_step.c's step_cache (pointer arrays made once)."""
        if self._step is None:
            arr = lambda ts: (ctypes.c_void_p * len(ts))(*(p(t) for t in ts))
            ptrs = [arr(ts) for ts in (self.kt, self.ksd, self.vq, self.vsd)]
            self._step = StepCache(*(ctypes.cast(a, ctypes.POINTER(ctypes.c_void_p))
                                     for a in ptrs), self.max_len)
            self._step_keep = ptrs
        return self._step

    @staticmethod
    def nbytes(cfg, n_layer: int, batch: int, max_len: int) -> int:
        max_len = -(-max(max_len, 1) // 16) * 16
        return n_layer * batch * cfg.n_kv_head * max_len * (2 * cfg.head_dim + 16)


class _Linear:
    def __init__(self, lin, kern: Kernels):
        self.packed = kern.pack(lin.w)
        self.mult = lin.mult.contiguous()
        self.sb, self.levels, self.n = lin.sb, lin.levels, lin.w.shape[0]


def _output(dest: torch.Tensor | None, M: int, V: int) -> torch.Tensor:
    """(M, V) int32: a view of dest where it is large enough, else a new tensor."""
    if dest is not None and dest.numel() >= M * V:
        return dest[:M * V].view(M, V)
    return torch.empty((M, V), dtype=torch.int32)


class FastModel:
    """An IntModel with its weights packed for the kernels."""

    def __init__(self, m: IntModel, kern: Kernels):
        self.m, self.k, self.cfg = m, kern, m.cfg
        self.gemma = m.arch == "gemma3"
        self.layers = [{n: _Linear(getattr(L, n), kern) for n in ("qkv", "o", "gate_up", "down")}
                       for L in m.layers]
        self.head = _Linear(m.head, kern)
        self.exp_t = torch.from_numpy(T.exp2_table())
        self.exp32 = self.exp_t.to(torch.int32)
        self.act_t = torch.from_numpy(T.activation_table("gelu" if self.gemma else "silu"))
        self.att_mult = score_multiplier(m)
        self.q_width = math.isqrt(self.cfg.n_embd << 42)
        self.q_head = math.isqrt(self.cfg.head_dim << 42)
        self._tabs = RopeTables(m, contiguous=True)
        self._step = None             # (StepModel, StepLayer array): made on first use
        self._local = threading.local()   # per thread: the output layer's sums (scratch)

    def _step_structs(self):
        """The model and its layers as exact_step.c's structs (they point into tensors
        self.m and self.layers keep)."""
        if self._step is None:
            c, k = self.cfg, self.k
            sm = k.step_model(C=c.n_embd, H=c.n_head, K=c.n_kv_head, D=c.head_dim,
                              F=c.ffn_hidden, gemma=int(self.gemma), act_frac=ACT_FRAC,
                              res_frac=RES_FRAC, zshift=SCORE_SHIFT, q_width=self.q_width,
                              q_head=self.q_head, att_mult=self.att_mult, exp32=p(self.exp32),
                              act_t=p(self.act_t))
            arr = (StepLayer * len(self.layers))()
            for S, L, W in zip(arr, self.m.layers, self.layers):
                for j, name in enumerate(("qkv", "o", "gate_up", "down")):
                    lin = W[name]
                    S.w[j], S.mult[j], S.levels[j] = p(lin.packed.buf), p(lin.mult), lin.levels
                    S.sb[j], S.n[j], S.k[j] = lin.sb, lin.packed.n, lin.packed.k
                for name in ("attn_norm", "ffn_norm", "q_norm", "k_norm", "post_attn_norm",
                             "post_ffn_norm"):
                    g = getattr(L, name)
                    setattr(S, name, None if g is None else p(g))
                S.rope, S.window = int(L.rope == "local"), L.window
            self._step = (sm, arr)
        return self._step

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return KVCache(self.cfg, len(self.m.layers), batch, max_len)

    def forward(self, tokens: torch.Tensor, seg: torch.Tensor, pos: int, cache: KVCache,
                threads: int = 1, precision: int = 24, out: str = "freqs", rope: int = 0,
                capture: dict | None = None, dest: torch.Tensor | None = None
                ) -> torch.Tensor | None:
        """tokens (B, T) at positions pos..pos+T-1 of the cache's segments `seg` (B,) ->
        frequency tables (B, T, V) int32, or with out="logits" the logits they are made
        from (B, T, V) int32 Q10 bits, or with out="cache" nothing (the cache is filled for
        those positions in every case). RoPE rotates position p by the angle of p + rope
        (a shifted window: ExactEngine.windows). capture: as reference.forward's. dest: a
        flat int32 tensor to write the result into where it is large enough (the result is
        then a view of it: the encoder reuses one, since fresh pages for 100 MB of tables a
        block cost a tenth of its time)."""
        B, Tn = tokens.shape
        (a, e), rows = self.hidden(tokens, seg, pos, cache, threads, rope, capture)
        if out == "cache":
            return None
        if out == "logits":
            return self.logits((a, e), threads, dest=dest).view(B, Tn, -1)
        return self.freqs((a, e), threads, precision, dest=dest).view(B, Tn, -1)

    def shift(self, cache: KVCache, seg: torch.Tensor, by: int, keep: int) -> None:
        """Move the cached positions by..by+keep-1 of segments `seg` to 0..keep-1 (keys,
        values and their scales, every layer): a window sliding by `by` positions."""
        n = cache.max_len
        assert 0 < by and by + keep <= n
        idx = seg.long()
        rows = idx.tolist()               # one segment at a time: plain views and copies
                                          # (indexing by a tensor of rows: 10x slower)
        if by % 16 == 0:                  # whole key tiles: one contiguous move per block
            for kt in cache.kt:
                v = kt.view(cache.batch, kt.shape[1], -1)
                D = kt.shape[-1]
                for b in rows:
                    v[b, :, :keep * D] = v[b, :, by * D:(by + keep) * D].clone()
        else:
            for kt in cache.kt:
                B, K, _, D = kt.shape
                t = kt[idx].view(len(idx), K, n // 16, D // 2, 16, 2)
                flat = t.permute(0, 1, 2, 4, 3, 5).reshape(len(idx), K, n, D)
                flat[:, :, :keep] = flat[:, :, by:by + keep].clone()
                t = flat.view(len(idx), K, n // 16, 16, D // 2, 2).permute(0, 1, 2, 4, 3, 5)
                kt[idx] = t.reshape(len(idx), K, n, D)
        for lst in (cache.vq, cache.ksd, cache.vsd):
            for x in lst:
                for b in rows:
                    x[b, :, :keep] = x[b, :, by:by + keep].clone()

    def clone(self) -> "FastModel":
        """A copy whose matrices set_linear may replace (the rest stays shared)."""
        c = copy.copy(self)
        c.m, c.layers = copy_model(self.m), list(self.layers)
        c._step, c._local = None, threading.local()
        return c

    def set_linear(self, li: int, name: str, lin) -> None:
        """Replace matrix `name` of layer li, packed again (dynamic evaluation)."""
        L = copy.copy(self.m.layers[li])
        setattr(L, name, lin)
        self.m.layers[li] = L
        self.layers[li] = {**self.layers[li], name: _Linear(lin, self.k)}
        self._step = None

    def hidden(self, tokens, seg, pos, cache, threads, rope=0, capture=None):
        """The final hidden states, quantised for the output layer: (a int16, e int32)."""
        c, m, k = self.cfg, self.m, self.k
        B, Tn = tokens.shape
        M = B * Tn
        H, K, D, F = c.n_head, c.n_kv_head, c.head_dim, c.ffn_hidden
        row_b = seg.to(torch.int32).repeat_interleave(Tn)
        row_pos = (torch.arange(Tn, dtype=torch.int32) + pos).repeat(B)
        tok = tokens.reshape(-1)
        e = m.emb
        x = k.embed(e.w, e.mult, e.sb, tok)                         # (M, C) int64, Q16
        tabs = self._tabs.get(cache.max_len, rope)
        if capture is None and M <= FUSED_ROWS:        # one C call for every layer
            sm, arr = self._step_structs()
            tg = tabs["global"]
            tl = tabs.get("local", tg)
            cos = (ctypes.c_void_p * 2)(p(tg[0]), p(tl[0]))
            sin = (ctypes.c_void_p * 2)(p(tg[1]), p(tl[1]))
            k.layers(sm, arr, cache.step_struct(), cos, sin, x, row_b, row_pos, threads)
            return k.norm_quant(x, m.norm, ACT_FRAC, self.q_width, self.head.levels,
                                threads), M
        # Rows are independent except in attention, which reads the cache: each layer runs
        # as two passes over chunks of `chunk` rows (everything up to the cache writes, then
        # attention onwards), so a chunk's temporaries stay in the CPU's cache (at B=21 x
        # 1,024 positions of SmolLM2: 2.03 -> 1.60 ms a token on one Zen 5 core).
        chunks = [(r, min(r + ROW_CHUNK, M)) for r in range(0, M, ROW_CHUNK)]
        for li, (L, W) in enumerate(zip(m.layers, self.layers)):
            cos, sin = tabs[L.rope]
            qs = []
            for r0, r1 in chunks:
                a, ea = k.norm_quant(x[r0:r1], L.attn_norm, ACT_FRAC, self.q_width,
                                     W["qkv"].levels, threads)
                qkv = k.requant(k.gemm(a, W["qkv"].packed, threads), W["qkv"], ea,
                                ACT_FRAC, ACT_FRAC, threads)           # (m, (H + 2K) D) Q12
                if self.gemma:
                    k.qk_norm(qkv, H, K, D, L.q_norm, L.k_norm, ACT_FRAC, self.q_head, threads)
                qs.append(k.qkv(qkv, H, K, D, row_b[r0:r1], row_pos[r0:r1], cos, sin,
                                self.gemma, cache, li, self.att_mult, SCORE_SHIFT, threads))
            for (r0, r1), (q16, eq) in zip(chunks, qs):
                xs = x[r0:r1]                                          # (m, C) view
                y = k.attention(q16, eq, H, K, D, row_b[r0:r1], row_pos[r0:r1], cache, li,
                                L.window, self.exp32, threads)
                a, ea = k.quant(y, W["o"].levels, threads)
                self._residual(xs, k.gemm(a, W["o"].packed, threads), W["o"], ea,
                               L.post_attn_norm if self.gemma else None, threads)
                if capture is not None and li in capture:
                    if capture[li] is None:
                        capture[li] = torch.empty_like(x)
                    capture[li][r0:r1] = xs
                a, ea = k.norm_quant(xs, L.ffn_norm, ACT_FRAC, self.q_width,
                                     W["gate_up"].levels, threads)
                acc = k.gemm(a, W["gate_up"].packed, threads)
                a, ea = k.glu(acc, W["gate_up"], ea, self.act_t, ACT_FRAC, W["down"].levels,
                              threads)
                self._residual(xs, k.gemm(a, W["down"].packed, threads), W["down"], ea,
                               L.post_ffn_norm if self.gemma else None, threads)
        if capture is not None:
            capture["final"] = x.clone()
        return k.norm_quant(x, m.norm, ACT_FRAC, self.q_width, self.head.levels, threads), M

    def _residual(self, xs, acc, lin, ea, post_norm, threads) -> None:
        """xs += the layer output acc (Q16), through Gemma's post-norm when there is one."""
        k = self.k
        if post_norm is None:
            k.requant(acc, lin, ea, ACT_FRAC, RES_FRAC, threads, out=xs)
        else:
            o = k.requant(acc, lin, ea, ACT_FRAC, ACT_FRAC, threads)
            xs += k.rmsnorm(o, post_norm, RES_FRAC, self.q_width, threads)

    def _head_sums(self, a: torch.Tensor, threads: int) -> torch.Tensor:
        """The output layer's int32 sums (M, V) for a block of rows, in a buffer kept per
        thread: a fresh one (64 MB for 64 rows of Gemma's 262,144 tokens) was above malloc's
        mmap threshold, so every block mapped and cleared new pages (1.5 million page
        faults, a fifth of level 9's compress time on alice29's first 20 KB)."""
        n = a.shape[0] * self.cfg.vocab_size
        buf = getattr(self._local, "head", None)
        if buf is None or buf.numel() < n:
            buf = self._local.head = torch.empty(n, dtype=torch.int32)
        return self.k.gemm(a, self.head.packed, threads, scratch=buf)

    def freqs(self, hidden, threads: int, precision: int, block: int = 64,
              dest: torch.Tensor | None = None) -> torch.Tensor:
        """Output layer and frequency tables for quantised hidden states, `block` rows at
        a time (the (rows, V) int32 sums of a block are the largest temporary)."""
        a, e = hidden
        M, V = a.shape[0], self.cfg.vocab_size
        out = _output(dest, M, V)
        for r in range(0, M, block):
            acc = self._head_sums(a[r:r + block], threads)
            self.k.freqs(acc, self.head, e[r:r + block], ACT_FRAC - LOGIT_FRAC, self.exp32,
                         precision, out[r:r + block], threads)
        return out

    def logits(self, hidden, threads: int, block: int = 64,
               dest: torch.Tensor | None = None) -> torch.Tensor:
        """Output layer for quantised hidden states: the logits freqs() makes its tables
        from, (M, V) int32 Q10 bits (clamped to +-2^30)."""
        a, e = hidden
        M, V = a.shape[0], self.cfg.vocab_size
        out = _output(dest, M, V)
        for r in range(0, M, block):
            acc = self._head_sums(a[r:r + block], threads)
            self.k.logits(acc, self.head, e[r:r + block], ACT_FRAC - LOGIT_FRAC,
                          out[r:r + block], threads)
        return out

    def table(self, logits: torch.Tensor, bias: torch.Tensor | None, precision: int,
              threads: int = 1) -> torch.Tensor:
        """Frequency tables from logits (M, V) int32 plus an int32 bias ((V,) or (M, V)):
        those of reference.freqs(clamp(logits + bias))."""
        out = torch.empty(logits.shape, dtype=torch.int32)
        self.k.table(logits.contiguous(), None if bias is None else bias.contiguous(),
                     self.exp32, precision, out, threads)
        return out
