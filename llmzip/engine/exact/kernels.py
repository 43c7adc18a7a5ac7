"""ctypes bindings of the exact engine's C kernels (engine/kernels/: exact_ops.c, the
exact_attention*.c files, exact_tables.c, exact_step.c, gemm_i8.c (+ _x86.c), adapt_ops.c
(codec/adapt.py's passes over the vocabulary) and pool.c, the one
thread pool they all share), built on
first use without -march=native: one library holds the portable path and every SIMD path
of the matrix product, chosen at run time from the CPU's features. Every path computes the
same integers; `path` forces one (tests do).
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from ...errors import KernelUnavailableError
from ..kernels.build import load as load_library

KERNEL = "exact engine's integer kernels"
# matrix-product paths of gemm_i8.c (its PATH_* numbers)
PATHS = {"auto": 0, "portable": 1, "avx2": 2, "avx512bw": 3, "avx512vnni": 4, "avxvnni": 5,
         "amx": 6}
# no -march: one build for every x86-64 CPU, SIMD paths chosen at run time; -fwrapv:
# int64 wraps as torch's does; float64 only ever holds exact integers (docs/engine.md),
# so fused multiply-adds change nothing and are allowed; no OpenMP: every kernel's threads
# are pool.c's pthreads (OpenMP's spinning threads beside them took their CPUs)
FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-pthread", "-fno-fast-math",
         "-fwrapv", "-fvisibility=hidden"]
# the level of exact_ops.c's and exact_attention.c's vectorised loops for each
# matrix-product path (0 plain C, 1 AVX2, 2 AVX-512, 3 AVX-512 with VNNI, 4 the same with
# attention's matrix products on AMX tiles)
LEVELS = {"portable": 0, "avx2": 1, "avxvnni": 1, "avx512bw": 2, "avx512vnni": 3, "amx": 4}
SOURCES = ["exact_ops.c", "exact_attention.c", "exact_attention_split.c",
           "exact_attention_amx.c", "exact_tables.c", "exact_step.c", "gemm_i8.c",
           "gemm_i8_x86.c", "pool.c", "adapt_ops.c"]
# Waking a second thread costs tens of microseconds (more in a VM): a call smaller than
# these runs on one thread whatever it is given. Measured on a 2-vCPU Zen 5 decoding 21
# segments at position 1,024: with 2 threads for every call a step took 57 ms (its matrix
# products 25 ms, requantisation 5 ms); with these limits 40 ms. Results never depend on it.
GEMM_PAR_MACS = 1 << 27     # M * N * K of a matrix product
ROWS_PAR_ITEMS = 1 << 18    # M * N of a row-wise kernel
# ... except a product whose weights are this large (bytes): decoding one segment (M = 1)
# streams every weight from memory each token, and a second thread streams as much again
# (Intel Xeon, 2 vCPUs: a 3 KB level-6 decode 18.0 -> 11.9 s)
GEMM_PAR_WEIGHTS = 1 << 18


def _t(threads: int, work: int, limit: int) -> int:
    return threads if work >= limit else 1

_i, _l, _v = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p


def p(t: torch.Tensor) -> int:
    """The data pointer of a contiguous tensor (the caller keeps the tensor alive)."""
    return t.data_ptr()         # an int: ctypes passes it as void * (argtypes say so)


def _setup(lib) -> None:
    sig = {
        "gemm_i8_supported_paths": (_i, []), "gemm_i8_best_path": (_i, []),
        "gemm_i8_packed_size": (_l, [_l, _l]), "gemm_i8_pack": (_i, [_v, _l, _l, _l, _v]),
        "gemm_i8": (_i, [_l, _l, _l, _v, _l, _v, _v, _l, _i, _i]),
        "llmzip_ex_embed": (_i, [_i, _i, _v, _v, _i, _v, _v, _i]),
        "llmzip_ex_quant": (_i, [_i, _i, _v, _l, _v, _v, _i, _i]),
        "llmzip_ex_rmsnorm": (_i, [_i, _i, _v, _v, _i, _l, _v, _i, _i]),
        "llmzip_ex_norm_quant": (_i, [_i, _i, _v, _v, _i, _l, _l, _v, _v, _i, _i]),
        "llmzip_ex_requant": (_i, [_i, _i, _v, _v, _i, _v, _v, _i, _i, _i]),
        "llmzip_ex_glu": (_i, [_i, _i, _v, _v, _i, _v, _v, _i, _l, _v, _v, _i, _i]),
        "llmzip_ex_qkv": (_i, [_i, _i, _i, _i, _v, _v, _v, _v, _v, _i, _v, _v, _v, _v, _v,
                               _v, _i, _l, _i, _i, _i]),
        "llmzip_ex_qk_norm": (_i, [_i, _i, _i, _i, _v, _v, _v, _i, _l, _i]),
        "llmzip_ex_attention": (_i, [_i, _i, _i, _i, _v, _v, _v, _v, _v, _v, _v, _v, _i, _i,
                                     _v, _v, _i, _i]),
        "llmzip_ex_freqs": (_i, [_i, _i, _v, _v, _i, _v, _v, _i, _v, _i, _i]),
        "llmzip_ex_logits": (_i, [_i, _i, _v, _v, _i, _v, _v, _i, _i]),
        "llmzip_ex_table": (_i, [_i, _i, _v, _v, _l, _v, _i, _v, _i, _i]),
        "llmzip_ad_centred": (_i, [_l, _l, _v, _v, _l, _v, _v]),
        "llmzip_ad_bias": (_i, [_l, _l, _v, _v, _l, _l, _l, _l, _l, _v, _v]),
        "llmzip_ad_temper": (_i, [_l, _v, _l, _v]),
        "llmzip_ad_table": (_i, [_i, _i, _v, _l, _v, _v, _l, _v, _v, _i, _l, _v, _v, _v, _i]),
        "llmzip_ex_max_level": (_i, []),
        "llmzip_ex_layers": (_i, [_v, _v, _i, _v, _v, _v, _i, _v, _v, _v, _i]),
        "llmzip_ex_attention_split": (_i, [_i]),
        "llmzip_ex_attention_vnni_values": (_i, [_i]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args


def library() -> ctypes.CDLL:
    return load_library("llmzip_exact", SOURCES, FLAGS, per_cpu=False, setup=_setup,
                        what=KERNEL)


def available() -> bool:
    try:
        library()
        return True
    except KernelUnavailableError:
        return False


def supported_paths() -> list[str]:
    """The matrix-product paths this CPU can run, portable first."""
    mask = library().gemm_i8_supported_paths()
    return [n for n, i in PATHS.items() if i and mask >> i & 1]


def best_path() -> str:
    best = library().gemm_i8_best_path()
    return next(n for n, i in PATHS.items() if i == best)


def attention_split(positions: int) -> int:
    """Set how many cached positions a thread takes at a time when a call has fewer
    (row, kv head) pairs than threads (Gemma's decoding step of one segment); 0: one
    thread per pair. Returns the old value. Speed only: the integers never change."""
    return library().llmzip_ex_attention_split(positions)


def attention_vnni_values(on: bool) -> bool:
    """Set whether the AVX-512 VNNI level sums attention's weighted values as byte
    products (the default) or in float64 as AVX-512BW does; returns the old setting.
    Speed only: the integers never change (tests and benchmarks compare the two)."""
    return bool(library().llmzip_ex_attention_vnni_values(int(bool(on))))


def _check(rc: int, what: str) -> None:
    if rc == 2:
        raise MemoryError(f"{what}: out of memory")
    if rc != 0:
        raise RuntimeError(f"{what} failed ({rc})")


class Packed:
    """int8 weights (N, K) in the matrix product's layout (the same for every path)."""

    def __init__(self, lib, w: torch.Tensor):
        w = w.contiguous()
        self.n, self.k = w.shape
        self.buf = torch.empty(int(lib.gemm_i8_packed_size(self.n, self.k)), dtype=torch.int8)
        _check(lib.gemm_i8_pack(p(w), self.n, self.k, self.k, p(self.buf)), "gemm_i8_pack")


class StepModel(ctypes.Structure):
    """exact_step.c's step_model: what llmzip_ex_layers needs of the model."""
    _fields_ = [(n, _i) for n in ("C", "H", "K", "D", "F", "gemma", "level", "path",
                                  "act_frac", "res_frac", "zshift")] + \
               [(n, _l) for n in ("q_width", "q_head", "att_mult", "gemm_par_macs",
                                  "gemm_par_weights", "rows_par_items")] + \
               [("exp32", _v), ("act_t", _v)]


class StepLayer(ctypes.Structure):
    """exact_step.c's step_layer: one layer's matrices (qkv, o, gate_up, down), norms
    (NULL where the model has none), RoPE table (0 global, 1 local) and window."""
    _fields_ = [("w", _v * 4), ("mult", _v * 4), ("levels", _l * 4), ("sb", _i * 4),
                ("n", _i * 4), ("k", _i * 4)] + \
               [(n, _v) for n in ("attn_norm", "ffn_norm", "q_norm", "k_norm",
                                  "post_attn_norm", "post_ffn_norm")] + \
               [("rope", _i), ("window", _i)]


class StepCache(ctypes.Structure):
    """exact_step.c's step_cache: arrays of each layer's key, value and scale pointers."""
    _fields_ = [(n, ctypes.POINTER(_v)) for n in ("kt", "ksd", "vc", "vsd")] + [("Smax", _i)]


class Kernels:
    """The kernels with one matrix-product path ("auto" or a name in PATHS)."""

    def __init__(self, path: str = "auto"):
        if path not in PATHS:
            raise ValueError(f"unknown kernel path {path!r} (known: {', '.join(PATHS)})")
        self.lib = library()
        if path != "auto" and path not in supported_paths():
            raise KernelUnavailableError(
                f"kernel path {path} needs CPU features this machine lacks", KERNEL,
                f"Choose auto or one of the paths it has: {', '.join(supported_paths())}")
        self.path = path if path != "auto" else best_path()
        self._path = PATHS[self.path]
        self.level = min(LEVELS[self.path], self.lib.llmzip_ex_max_level())

    def pack(self, w: torch.Tensor) -> Packed:
        return Packed(self.lib, w)

    def gemm(self, a: torch.Tensor, w: Packed, threads: int,
             scratch: torch.Tensor | None = None) -> torch.Tensor:
        """a (M, K) int16 @ w^T -> (M, N) int32, exact; written into the start of
        scratch (int32, contiguous) where it is large enough."""
        a = a.contiguous()
        M = a.shape[0]
        if scratch is not None and scratch.numel() >= M * w.n:
            out = scratch[:M * w.n].view(M, w.n)
        else:
            out = torch.empty((M, w.n), dtype=torch.int32)
        if M:
            par = M * w.n * w.k >= GEMM_PAR_MACS or w.n * w.k >= GEMM_PAR_WEIGHTS
            rc = self.lib.gemm_i8(M, w.n, w.k, p(a), w.k, p(w.buf), p(out), w.n,
                                  threads if par else 1, self._path)
            _check(rc, "gemm_i8")
        return out

    def step_model(self, **fields) -> StepModel:
        """A StepModel with this object's path and level (layers() adds the thread rules)."""
        return StepModel(level=self.level, path=self._path, **fields)

    def layers(self, model: StepModel, layers, cache: StepCache, cos, sin, x, row_b,
               row_pos, threads: int) -> None:
        """Every layer on the rows x (M, C) int64, in place (exact_step.c): what
        FastModel.hidden computes kernel by kernel, in one call."""
        model.gemm_par_macs, model.gemm_par_weights = GEMM_PAR_MACS, GEMM_PAR_WEIGHTS
        model.rows_par_items = ROWS_PAR_ITEMS           # (tests change them)
        _check(self.lib.llmzip_ex_layers(ctypes.byref(model), layers, len(layers),
                                         ctypes.byref(cache), cos, sin, x.shape[0], p(x),
                                         p(row_b), p(row_pos), threads), "layers")

    def embed(self, w, mult, sb, tok, res_frac=16):
        M, C = tok.shape[0], w.shape[1]
        out = torch.empty((M, C), dtype=torch.int64)
        tok = tok.to(torch.int64).contiguous()
        _check(self.lib.llmzip_ex_embed(M, C, p(w), p(mult), sb - res_frac, p(tok), p(out), 1),
               "embed")
        return out

    def quant(self, y, levels, threads):
        M, K = y.shape
        a, e = torch.empty((M, K), dtype=torch.int16), torch.empty(M, dtype=torch.int32)
        _check(self.lib.llmzip_ex_quant(M, K, p(y), levels, p(a), p(e), self.level,
                                         _t(threads, M * K, ROWS_PAR_ITEMS)), "quant")
        return a, e

    def rmsnorm(self, x, gain, out_frac, q, threads):
        M, C = x.shape
        y = torch.empty_like(x)
        _check(self.lib.llmzip_ex_rmsnorm(M, C, p(x), p(gain), out_frac, q, p(y), self.level,
                                           _t(threads, M * C, ROWS_PAR_ITEMS)),
               "rmsnorm")
        return y

    def norm_quant(self, x, gain, out_frac, q, levels, threads):
        M, C = x.shape
        a, e = torch.empty((M, C), dtype=torch.int16), torch.empty(M, dtype=torch.int32)
        _check(self.lib.llmzip_ex_norm_quant(M, C, p(x), p(gain), out_frac, q, levels, p(a),
                                             p(e), self.level, _t(threads, M * C, ROWS_PAR_ITEMS)),
               "norm_quant")
        return a, e

    def requant(self, acc, lin, e, in_frac, out_frac, threads, out=None):
        M, N = acc.shape
        add = out is not None
        if out is None:
            out = torch.empty((M, N), dtype=torch.int64)
        _check(self.lib.llmzip_ex_requant(M, N, p(acc), p(lin.mult), lin.sb + in_frac - out_frac,
                                          p(e), p(out), int(add), self.level,
                                          _t(threads, M * N, ROWS_PAR_ITEMS)), "requant")
        return out

    def glu(self, acc, lin, e, table, frac, levels, threads):
        M, F = acc.shape[0], acc.shape[1] // 2
        a, ea = torch.empty((M, F), dtype=torch.int16), torch.empty(M, dtype=torch.int32)
        _check(self.lib.llmzip_ex_glu(M, F, p(acc), p(lin.mult), lin.sb, p(e), p(table), frac,
                                      levels, p(a), p(ea), self.level,
                                      _t(threads, M * F, ROWS_PAR_ITEMS)), "glu")
        return a, ea

    def qk_norm(self, qkv, H, K, D, qg, kg, frac, q, threads):
        _check(self.lib.llmzip_ex_qk_norm(qkv.shape[0], H, K, D, p(qkv), p(qg), p(kg), frac, q,
                                          _t(threads, qkv.numel(), ROWS_PAR_ITEMS)), "qk_norm")

    def qkv(self, qkv, H, K, D, row_b, row_pos, cos, sin, halves, cache, li, att_mult,
            zshift, threads):
        M = qkv.shape[0]
        q16 = torch.empty((M, H, D), dtype=torch.int16)
        eq = torch.empty((M, H), dtype=torch.int32)
        _check(self.lib.llmzip_ex_qkv(M, H, K, D, p(qkv), p(row_b), p(row_pos), p(cos), p(sin),
                                      int(halves), p(q16), p(eq), p(cache.kt[li]),
                                      p(cache.ksd[li]), p(cache.vq[li]), p(cache.vsd[li]),
                                      cache.max_len, att_mult, zshift, self.level,
                                      _t(threads, qkv.numel(), ROWS_PAR_ITEMS)), "qkv")
        return q16, eq

    def attention(self, q16, eq, H, K, D, row_b, row_pos, cache, li, window, exp32, threads):
        M = q16.shape[0]
        y = torch.empty((M, H * D), dtype=torch.int64)
        _check(self.lib.llmzip_ex_attention(M, H, K, D, p(q16), p(eq), p(row_b), p(row_pos),
                                            p(cache.kt[li]), p(cache.ksd[li]), p(cache.vq[li]),
                                            p(cache.vsd[li]), cache.max_len, window, p(exp32),
                                            p(y), self.level, threads), "attention")
        return y

    def freqs(self, acc, lin, e, frac_drop, exp_t, precision, out, threads):
        M, V = acc.shape
        e = e.contiguous()
        _check(self.lib.llmzip_ex_freqs(M, V, p(acc), p(lin.mult), lin.sb + frac_drop, p(e),
                                        p(exp_t), precision, p(out), self.level, threads),
               "freqs")

    def logits(self, acc, lin, e, frac_drop, out, threads):
        """The logits llmzip_ex_freqs makes its tables from: (M, V) int32, Q10 bits."""
        M, V = acc.shape
        e = e.contiguous()
        _check(self.lib.llmzip_ex_logits(M, V, p(acc), p(lin.mult), lin.sb + frac_drop, p(e),
                                         p(out), self.level, _t(threads, M * V, ROWS_PAR_ITEMS)),
               "logits")

    def table(self, logits, bias, exp_t, precision, out, threads=1):
        """Frequency tables (M, V) from logits (M, V) plus bias ((V,) for every row, (M, V)
        one per row, or None), as freqs() makes them from its own logits."""
        M, V = logits.shape
        stride = 0 if bias is None or bias.dim() == 1 else V
        _check(self.lib.llmzip_ex_table(M, V, p(logits), 0 if bias is None else p(bias),
                                        stride, p(exp_t), precision, p(out), self.level,
                                        _t(threads, M * V, ROWS_PAR_ITEMS)), "table")
