#!/usr/bin/env python3
"""Core benchmark of llmzip on one file (issue 2): sizes, bits per byte (real and ideal),
compress/decompress speed, model load time, xz -9e on the same file, and the share of this
machine's matmul peak (measured in the same run) that the model reaches.

    python scripts/bench_core.py FILE [--model M] [--dtype auto|float32|bfloat16] [--threads N]
                                      [--batch B] [--seg-len L] [--json OUT]

Prints a readable block, then one JSON line (also appended to OUT with --json).
Run it on a quiet machine, and with --threads 1 as well as 2.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from llmzip.engine.float_engine import ATTENTIONS  # noqa: E402
from llmzip.tools.corebench import core_benchmark, format_core  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--model", help="model name (default smollm2-135m) or GGUF path")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    p.add_argument("--attention", choices=["auto", *ATTENTIONS],
                   default="auto", help="KV cache and attention kernel")
    p.add_argument("--threads", type=int,
                   help="torch threads (default $LLMZIP_THREADS, else up to 2)")
    p.add_argument("--batch", type=int, default=64, help="most segments coded in lockstep")
    p.add_argument("--seg-len", type=int, help="most tokens per segment")
    p.add_argument("--no-fallback", action="store_true",
                   help="keep model-coded chunks even where zstd would be smaller")
    p.add_argument("--peak-seconds", type=float, default=0.3,
                   help="time spent on each matmul shape when measuring the peak")
    p.add_argument("--json", metavar="OUT", help="append the JSON line to this file")
    a = p.parse_args(argv)
    r = core_benchmark(a.file, model=a.model, dtype=a.dtype, threads=a.threads,
                       batch=a.batch, seg_len=a.seg_len, fallback=not a.no_fallback,
                       peak_seconds=a.peak_seconds, attention=a.attention)
    print(format_core(r))
    line = json.dumps(r, default=str)
    print(line)
    if a.json:
        with open(a.json, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0 if r["round_trip"] else 1


if __name__ == "__main__":
    sys.exit(main())
