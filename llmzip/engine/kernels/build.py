"""Build llmzip's C kernels on first use with the system C compiler, and load them.

A library is compiled once per (sources, flags, compiler version, CPU when the flags
target it) into ``$LLMZIP_CACHE/kernels`` (default ~/.cache/llmzip/kernels; a temporary
folder when the cache is off), written to a temporary name and renamed, so concurrent
first uses are safe. It is loaded with ctypes: no Python or torch headers, a build of a
second or two.
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

from ...errors import KernelUnavailableError
from ..host import cache_root, cpu_flags_line

HERE = os.path.dirname(os.path.abspath(__file__))
_lock = threading.Lock()
_loaded: dict = {}


class BuildError(Exception):
    """Why a library could not be built or loaded; load() names the kernel."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise BuildError("no C compiler found (looked for $CC, cc, gcc)")
    return cc


def build(name: str, sources: list[str], flags: list[str], per_cpu: bool) -> str:
    """Path of the shared library `name` built from `sources` (files in this folder).
    per_cpu: the flags target the building CPU (-march=native), so the CPU is part of
    the cache key; portable builds are keyed by sources, flags and compiler only."""
    cc = compiler()
    srcs = [os.path.join(HERE, s) for s in sources]
    blobs = []
    headers = sorted({os.path.join(os.path.dirname(s), h) for s in srcs
                      for h in os.listdir(os.path.dirname(s)) if h.endswith(".h")})
    for s in srcs + headers:              # headers next to the sources are in the key too
        with open(s, "rb") as f:
            blobs.append(f.read())
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"{cc} --version failed: {e}") from None
    cpu = (cpu_flags_line() or platform.processor() + platform.machine()) if per_cpu else ""
    key = hashlib.sha256(b"\0".join([*blobs, " ".join(flags).encode(), version,
                                     platform.machine().encode(), cpu.encode()])
                         ).hexdigest()[:16]
    root = os.path.join(cache_root() or os.path.join(tempfile.gettempdir(), "llmzip"),
                        "kernels")
    path = os.path.join(root, f"{name}-{key}.so")
    if os.path.exists(path):
        return path
    try:
        os.makedirs(root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".so.tmp")
        os.close(fd)
    except OSError as e:
        raise BuildError(f"cannot write to {root}: {e}") from None
    try:
        try:
            r = subprocess.run([cc, *flags, *srcs, "-o", tmp, "-lm"], capture_output=True,
                               timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BuildError(f"running {cc} failed: {e}") from None
        if r.returncode != 0:
            msg = r.stderr.decode(errors="replace").strip().splitlines()
            raise BuildError(f"{cc} failed: {msg[-1] if msg else r.returncode}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(name: str, sources: list[str], flags: list[str], per_cpu: bool, what: str,
         setup=None, hint: str | None = None) -> ctypes.CDLL:
    """The library, built if needed and loaded once per process; setup(lib) declares
    its functions' argument types. Raises KernelUnavailableError naming `what` (the
    kernel in words), with `hint` (what to do; default: install a C compiler)."""
    with _lock:
        if name not in _loaded:
            try:
                path = build(name, sources, flags, per_cpu)
                try:
                    lib = ctypes.CDLL(path)
                except OSError as e:
                    raise BuildError(f"loading {path} failed: {e}") from None
            except BuildError as e:
                raise KernelUnavailableError(e.reason, what, hint) from None
            if setup is not None:
                setup(lib)
            _loaded[name] = lib
        return _loaded[name]
