"""Online mode next to classical compressors, in one run, on the same files.

    python scripts/bench_online.py [--files tinyshakespeare.txt,alice29.txt]
        [--presets s] [--limit BYTES] [--threads N] [--out bench_online.jsonl]
        [--plots docs/img]

Prints one table (bits per byte = 8 x archive bytes / original bytes, headers included;
compress and decompress speed in bytes/s) and appends one JSON row per (file, codec) to
--out. Every codec's round trip is verified; a failed round trip is reported, not hidden.
Baselines come from llmzip's codec registry (llmzip/baselines.py): xz -9e, bzip2 -9,
PPMd order 6 and zpaq method 5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "..", "..", "shared", "corpus")


def baselines() -> dict:
    """The classical codecs from llmzip's registry (round trips are verified by measure)."""
    from llmzip.tools.baselines import get_codec
    out = {}
    for name in ("xz-9e", "bzip2-9", "ppmd-6", "zpaq-5"):
        c = get_codec(name)
        if c.available():
            out[c.label or name] = (c.compress, c.decompress)
        else:
            print(f"{name} skipped: {c.unavailable_reason()}", file=sys.stderr)
    return out


def measure(name: str, comp, decomp, data: bytes) -> tuple[dict, bytes]:
    t0 = time.perf_counter()
    blob = comp(data)
    t1 = time.perf_counter()
    back = decomp(blob)
    t2 = time.perf_counter()
    n = max(1, len(data))
    return {"codec": name, "bytes": len(data), "compressed": len(blob),
            "bpb": round(8 * len(blob) / n, 4), "compress_Bps": round(n / (t1 - t0), 1),
            "decompress_Bps": round(n / (t2 - t1), 1), "round_trip": back == data}, blob


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", default="tinyshakespeare.txt,alice29.txt")
    ap.add_argument("--presets", default="s")
    ap.add_argument("--limit", type=int, default=None, help="first BYTES of each file")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: llmzip's, $LLMZIP_THREADS else up to 2)")
    ap.add_argument("--out", default="bench_online.jsonl")
    ap.add_argument("--plots", default=None, help="folder for each online run's loss curve PNG")
    a = ap.parse_args(argv)
    from llmzip.codec.online import (PRESETS, compress_online, decompress_online,
                                     online_accounting, plot_loss_curve)
    rows = []
    for fname in a.files.split(","):
        path = fname if os.path.exists(fname) else os.path.join(CORPUS, fname)
        with open(path, "rb") as f:
            data = f.read(a.limit) if a.limit else f.read()
        codecs = dict(baselines())
        for p in a.presets.split(","):
            codecs[f"online {p} ({PRESETS[p].n_params() / 1e6:.2f}M)"] = (
                lambda d, p=p: compress_online(d, preset=p, threads=a.threads),
                lambda c: decompress_online(c))
        for name, (comp, decomp) in codecs.items():
            m, blob = measure(name, comp, decomp, data)
            row = {"file": os.path.basename(path), **m}
            if name.startswith("online"):
                acc = online_accounting(blob)
                row.update(ideal_bpb=round(acc["ideal_bpb"], 4), chunks=acc["chunks"],
                           header_bytes=acc["header_bytes"],
                           coding_overhead=acc["coding_overhead"])
                if a.plots and "online" in acc["chunks"]:
                    os.makedirs(a.plots, exist_ok=True)
                    stem = os.path.splitext(os.path.basename(path))[0]
                    preset = name.split()[1]
                    row["plot"] = plot_loss_curve(
                        blob, os.path.join(a.plots, f"online_{preset}_{stem}.png"))
            rows.append(row)
            print(f"{row['file']:<22}{name:<22}{row['bpb']:>7.3f} bpb "
                  f"{row['compress_Bps']:>14,.0f} B/s c {row['decompress_Bps']:>14,.0f} B/s d"
                  f"  {'ok' if row['round_trip'] else 'ROUND TRIP FAILED'}", flush=True)
            with open(a.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    return 0 if all(r["round_trip"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
