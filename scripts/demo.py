#!/usr/bin/env python
"""Compress and decompress the first N bytes of a file with the default model through the
CLI, check the round trip, and print the sizes next to xz -9e's."""

import lzma
import os
import subprocess
import sys
import tempfile
import time

src, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 12000
data = open(src, "rb").read()[:n] if n > 0 else open(src, "rb").read()
with tempfile.TemporaryDirectory() as d:
    sample = os.path.join(d, os.path.basename(src))
    open(sample, "wb").write(data)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmzip", "compress", sample], check=True)
    t1 = time.perf_counter()
    os.rename(sample, sample + ".orig")
    subprocess.run([sys.executable, "-m", "llmzip", "decompress", sample + ".llmz"], check=True)
    t2 = time.perf_counter()
    assert open(sample, "rb").read() == data, "round trip FAILED"
    size = os.path.getsize(sample + ".llmz")
xz = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
print(f"\n{os.path.basename(src)} (first {len(data)} bytes): round trip OK")
print(f"  llmzip  {size:8d} bytes  {8 * size / len(data):.3f} bits/byte   "
      f"(compress {t1 - t0:.1f} s, decompress {t2 - t1:.1f} s, model load included)")
print(f"  xz -9e  {xz:8d} bytes  {8 * xz / len(data):.3f} bits/byte")
