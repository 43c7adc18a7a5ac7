"""llmzip's own compiled kernels, built on first use with the system C compiler.

Only one so far: ``attend_bf16``, a decoding step of grouped-query attention over a
bfloat16 KV cache (attend_bf16.c says why it exists and how it stays deterministic).

The shared library is compiled once per (source, compiler, CPU) into
``$LLMZIP_CACHE/kernels`` (default ~/.cache/llmzip/kernels; a temporary folder when the
cache is off), written to a temporary name and renamed, so concurrent first uses are safe.
It is loaded with ctypes: no Python headers, no torch headers, a build of about a second.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading

import torch

from ...errors import KernelUnavailableError
from ..host import cache_root, cpu_flags_line

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "attend_bf16.c")
# -ffp-contract=off: no fused multiply-adds, so every build does the same IEEE operations
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp",
         "-shared", "-fPIC", "-std=c11"]

TILE = 16          # positions per key tile (LANES in attend_bf16.c)

_lock = threading.Lock()
_lib = None


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise KernelUnavailableError("no C compiler found (looked for $CC, cc, gcc)")
    return cc


def _build(cc: str) -> str:
    with open(SOURCE, "rb") as f:
        src = f.read()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelUnavailableError(f"{cc} --version failed: {e}") from None
    key = hashlib.sha256(b"\0".join([src, " ".join(FLAGS).encode(), version,
                                     (cpu_flags_line() or platform.processor()
                                      + platform.machine()).encode()])).hexdigest()[:16]
    root = os.path.join(cache_root() or os.path.join(tempfile.gettempdir(), "llmzip"),
                        "kernels")
    path = os.path.join(root, f"attend_bf16-{key}.so")
    if os.path.exists(path):
        return path
    try:
        os.makedirs(root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".so.tmp")
        os.close(fd)
    except OSError as e:
        raise KernelUnavailableError(f"cannot write to {root}: {e}") from None
    try:
        try:
            r = subprocess.run([cc, *FLAGS, SOURCE, "-o", tmp, "-lm"], capture_output=True,
                               timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelUnavailableError(f"running {cc} failed: {e}") from None
        if r.returncode != 0:
            msg = r.stderr.decode(errors="replace").strip().splitlines()
            raise KernelUnavailableError(f"{cc} failed: {msg[-1] if msg else r.returncode}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load() -> ctypes.CDLL:
    """The kernel library, built if needed; raises KernelUnavailableError."""
    global _lib
    with _lock:
        if _lib is None:
            path = _build(_compiler())
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                raise KernelUnavailableError(f"loading {path} failed: {e}") from None
            f = lib.llmzip_attend_bf16
            f.restype = ctypes.c_int
            f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 7 + [ctypes.c_float,
                                                                        ctypes.c_int]
            _lib = lib
        return _lib


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
