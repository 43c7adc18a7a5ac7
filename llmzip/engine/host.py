"""What the engine needs to know about the machine it runs on: the CPU's instruction sets
and the cache folder. A leaf: float_engine, kernels/ and models/registry all import it,
and it imports nothing of llmzip's.

(Not named platform.py: that would shadow the standard library's platform module, which
this module and its users import.)
"""

from __future__ import annotations

import os
import platform


def cpu_flags_line() -> str | None:
    """The raw "flags" line of /proc/cpuinfo, None where there is none: what identifies
    the CPU's instruction sets, for the engine profile and the kernel cache."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return None


def cpu_flags() -> str:
    """CPU features that can change which kernels torch picks (and so the last bits)."""
    line = cpu_flags_line()
    if line is None:
        return platform.machine()
    have = set(line.split(":", 1)[1].split())
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return ",".join(x for x in wanted if x in have)


def cache_root() -> str | None:
    """$LLMZIP_CACHE or ~/.cache/llmzip; None if caching is off ("", "0" or "off")."""
    root = os.environ.get("LLMZIP_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "llmzip"))
    return None if root in ("", "0", "off") else root
