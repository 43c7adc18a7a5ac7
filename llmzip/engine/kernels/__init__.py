"""llmzip's own compiled kernels, built on first use with the system C compiler.

Only one so far: ``attend_bf16``, a decoding step of grouped-query attention over a
bfloat16 KV cache (attend_bf16.c says why it exists and how it stays deterministic).

The shared library is compiled by build.py once per (source, compiler, CPU) into
``$LLMZIP_CACHE/kernels``, as the exact engine's, the range coder and the bitwise mixer
are; it is loaded with ctypes: no Python headers, no torch headers, a build of about a
second.
"""

from __future__ import annotations

import ctypes
import os

import torch

from ...errors import KernelUnavailableError
from .build import load as load_library

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "attend_bf16.c")
NAME = "attend_bf16"
# -ffp-contract=off: no fused multiply-adds, so every build does the same IEEE operations
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp",
         "-shared", "-fPIC", "-std=c11"]

KERNEL = "bf16 attention kernel"
HINT = ("It is built on first use with a C compiler (install gcc, or set $CC); to compress "
        "without it use --attention torch-f32 (archives made with it decode only where it "
        "builds)")

TILE = 16          # positions per key tile (LANES in attend_bf16.c)


def _setup(lib) -> None:
    f = lib.llmzip_attend_bf16
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 7 + [ctypes.c_float, ctypes.c_int]


def load() -> ctypes.CDLL:
    """The kernel library, built if needed (build.py, keyed by this CPU: -march=native);
    raises KernelUnavailableError."""
    return load_library(NAME, [os.path.basename(SOURCE)], FLAGS, per_cpu=True, what=KERNEL,
                        setup=_setup, hint=HINT)


def available() -> bool:
    try:
        load()
        return True
    except KernelUnavailableError:
        return False


def tile_keys(k: torch.Tensor) -> torch.Tensor:
    """(B, K, T, D) -> the kernel's key layout (B, K, T/16, D, 16); T a multiple of 16."""
    B, K, T, D = k.shape
    return k.reshape(B, K, T // TILE, TILE, D).transpose(-1, -2).contiguous()


def attend_bf16(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int,
                stop: int, scale: float, threads: int) -> torch.Tensor:
    """softmax(q k^T * scale) v over cached positions start..stop-1.

    q: (B, K, G, D) float32; k_cache: (B, K, T_max/16, D, 16) bfloat16 (tiled: see
    tile_keys); v_cache: (B, K, T_max, D) bfloat16; both contiguous.
    Returns (B, K, G, D) float32. The result does not depend on `threads`."""
    lib = load()
    B, K, G, D = q.shape
    T_max = v_cache.shape[2]
    if (k_cache.dtype != torch.bfloat16 or v_cache.dtype != torch.bfloat16
            or v_cache.shape != (B, K, T_max, D) or T_max % TILE
            or k_cache.shape != (B, K, T_max // TILE, D, TILE)
            or not (k_cache.is_contiguous() and v_cache.is_contiguous())):
        raise ValueError("attend_bf16: caches must be contiguous bfloat16, keys "
                         "(B, K, T_max/16, D, 16) and values (B, K, T_max, D)")
    q = q.to(torch.float32).contiguous()
    out = torch.empty((B, K, G, D), dtype=torch.float32)
    rc = lib.llmzip_attend_bf16(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                                out.data_ptr(), B, K, G, D, T_max, start, stop, scale, threads)
    if rc == 1:
        raise ValueError(f"attend_bf16: unsupported shape q={tuple(q.shape)} "
                         f"T_max={T_max} positions {start}..{stop - 1}")
    if rc == 2:
        raise MemoryError("attend_bf16: out of memory for the score buffer")
    return out
