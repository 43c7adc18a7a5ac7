#!/usr/bin/env python3
"""Cluster benchmark (issue 16): compress and decompress B/s of the single-process path and
of the Ray work layer with 1, 2, ... local workers on the same input (every archive checked
to be the single-process one byte for byte), and the projected wall time for 1 GB of
English text on 1, 8, 64 and 512 workers (llmzip/tools/clusterbench.py, docs/cluster.md).

    python scripts/bench_cluster.py [FILE] [--bytes N] [--model M] [--workers 1,2]
                                    [--batch B] [--seg-len L] [--out DIR]

Needs Ray (pip install 'llmzip[ray]'). Writes DIR/bench-<time>.json (default
docs/results/cluster/).
"""

import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from llmzip.tools.clusterbench import bench_cluster, format_bench, write_results  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?",
                   default=os.path.join(ROOT, "..", "shared", "corpus", "alice29.txt"))
    p.add_argument("--bytes", type=int, default=8192, help="first N bytes of FILE")
    p.add_argument("--model", help="model name or GGUF path (default smollm2-135m)")
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    p.add_argument("--batch", type=int, default=4,
                   help="segments per chunk (small, so a small input has several chunks)")
    p.add_argument("--seg-len", type=int, default=256, help="tokens per segment")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "cluster"))
    a = p.parse_args(argv)
    data = open(a.file, "rb").read()[:a.bytes]
    res = bench_cluster(data, model=a.model, workers=[int(w) for w in a.workers.split(",")],
                        batch=a.batch, seg_len=a.seg_len, fallback=False)
    res["file"] = os.path.basename(a.file)
    print(format_bench(res))
    print("wrote", write_results(res, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
