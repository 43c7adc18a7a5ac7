"""The decoder with guessed steps (codec/draft.py) against one step at a time, measured
side by side in one process: decompress speed, forward passes per token, round trips.

    python scripts/bench_draft.py ../shared/corpus/alice29.txt --bytes 20000 --level 9 \\
        --out docs/results/draft/draft.jsonl

The archive is written once; then it is decoded alternately with and without guesses
(--repeat times each), so both see the same machine. The decoded bytes must be the
input's both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from llmzip.codec import lockstep  # noqa: E402
from llmzip.codec.api import Compressor  # noqa: E402
from llmzip.codec.decompressor import Decompressor  # noqa: E402
from llmzip.tools.bench import append_jsonl  # noqa: E402
from llmzip.tools.enginebench import machine_info  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--bytes", type=int, default=0, help="only the first N bytes")
    ap.add_argument("--level", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=1, help="decodes each way")
    ap.add_argument("--out", help="append each row as a JSON line")
    a = ap.parse_args(argv)
    with open(a.file, "rb") as f:
        data = f.read()
    if a.bytes:
        data = data[:a.bytes]
    mi = machine_info()
    cpu = f"{mi['cpu']}, {mi['cores_usable']} cores"
    c = Compressor(level=a.level)
    t0 = time.perf_counter()
    blob = c.compress(data)
    comp = time.perf_counter() - t0
    print(f"{os.path.basename(a.file)} ({len(data):,} bytes) at -{a.level}: {len(blob):,} "
          f"bytes, compress {len(data) / comp:,.0f} B/s; {cpu}", flush=True)
    d = Decompressor(c.model)
    for _ in range(a.repeat):
        for guess in (True, False):
            lockstep.SPECULATE = guess
            engine = d.engine
            before = dict(engine.decoded) if engine else {}
            t0 = time.perf_counter()
            ok = d.decompress(blob) == data
            sec = time.perf_counter() - t0
            if d.engine is not engine:          # an engine made for this archive
                before = {"passes": 0, "steps": 0}
            steps = d.engine.decoded["steps"] - before["steps"]
            passes = d.engine.decoded["passes"] - before["passes"]
            row = {"file": os.path.basename(a.file), "bytes": len(data), "level": a.level,
                   "archive_bytes": len(blob), "guesses": guess, "round_trip": ok,
                   "decompress_s": round(sec, 1), "decompress_Bps": round(len(data) / sec, 1),
                   "steps": steps, "passes": passes,
                   "tokens_per_pass": round(steps / max(passes, 1), 3), "cpu": cpu,
                   "load": round(os.getloadavg()[0], 2)}
            print(json.dumps(row), flush=True)
            if a.out:
                append_jsonl(a.out, row)
            if not ok:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
