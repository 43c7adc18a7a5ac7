"""Dynamic evaluation in the exact engine (--adapt dyneval=RATE), measured: the archive's
bits/byte with and without it, on top of a level's own adaptive models or alone, with
compress (and optionally decompress) speed and the seconds its steps took.

    python scripts/bench_dyneval.py ../shared/corpus/alice29.txt --bytes 40000 \\
        --rates 0 3e-4 --adapt level --adapt none --out docs/results/dyneval/exact.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from llmzip.tools.bench import append_jsonl  # noqa: E402
from llmzip.codec.api import Compressor  # noqa: E402
from llmzip.codec.decompressor import Decompressor  # noqa: E402
from llmzip.codec.levels import level_settings  # noqa: E402
from llmzip.tools.enginebench import machine_info  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--bytes", type=int, default=0, help="only the first N bytes")
    ap.add_argument("--level", type=int, default=6)
    ap.add_argument("--rates", nargs="+", type=float, default=[0, 3e-4],
                    help="learning rates (Adam's lr on the weights); 0: none")
    ap.add_argument("--adapt", action="append", choices=["level", "none"],
                    help="beside the level's adaptive models, or with none (repeatable)")
    ap.add_argument("--decompress", action="store_true", help="also time the decoder")
    ap.add_argument("--out", help="append each row as a JSON line")
    a = ap.parse_args(argv)
    with open(a.file, "rb") as f:
        data = f.read()
    if a.bytes:
        data = data[:a.bytes]
    mi = machine_info()
    cpu = f"{mi['cpu']}, {mi['cores_usable']} cores"
    for base in a.adapt or ["level"]:
        adapt = dict(level_settings(a.level)["adapt"]) if base == "level" else {}
        for rate in a.rates:
            ad = dict(adapt, **({"dyneval": round(rate * 2 ** 30)} if rate else {}))
            c = Compressor(level=a.level, adapt=ad)
            t0 = time.perf_counter()
            blob = c.compress(data)
            row = {"file": os.path.basename(a.file), "bytes": len(data), "level": a.level,
                   "adapt": ad, "lr": rate, "bpb": round(8 * len(blob) / len(data), 5),
                   "ideal_bpb": round(c.stats.ideal_bits / len(data), 5),
                   "compress_Bps": round(len(data) / (time.perf_counter() - t0), 1),
                   "learn_seconds": round(c.stats.learn_seconds, 1), "cpu": cpu,
                   "load": round(os.getloadavg()[0], 2)}
            if a.decompress:
                t0 = time.perf_counter()
                ok = Decompressor().decompress(blob) == data
                row.update(decompress_Bps=round(len(data) / (time.perf_counter() - t0), 1),
                           round_trip=ok)
            print(json.dumps(row), flush=True)
            if a.out:
                append_jsonl(a.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
