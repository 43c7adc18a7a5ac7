#!/usr/bin/env python
"""Long fuzz run of the decoder: random bytes, mutated valid archives, truncations and
well-formed records with garbage payloads, for --seconds. Counts every outcome and
prints one JSON report; exit status 1 if any silent wrong output or unexpected crash.

    python scripts/fuzz.py --seconds 1800 [--json docs/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import llmzip  # noqa: E402
from llmzip.codec import container as ct  # noqa: E402
from llmzip.engine.models.registry import load_model  # noqa: E402
from llmzip.engine.models.tiny import write_tiny_gguf  # noqa: E402
from llmzip.errors import ArchiveError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    model = load_model(write_tiny_gguf(os.path.join(tempfile.mkdtemp(), "tiny.gguf")))
    inputs = [b"", b"x", os.urandom(3000), b"The cat sat on the mat. " * 80,
              bytes(range(256)) * 8 + b"text after binary " * 300,
              "多语言文本 ünïcödé ✓ ".encode() * 60,
              bytes((i * 7919 + (i >> 3) * 31) & 0xFF for i in range(6000))]   # an xz chunk
    archives = []
    for d in inputs:
        for fb in (True, False):
            archives.append((d, llmzip.compress(d, model=model, batch=3, seg_len=48,
                                                fallback=fb)))
    counts = {"cases": 0, "exact": 0, "refused": {}, "wrong_output": 0, "crash": 0}
    crashes = []
    t_end = time.time() + a.seconds
    while time.time() < t_end:
        data, blob = rng.choice(archives)
        kind = rng.choice(["flip", "bytes", "truncate", "extend", "garbage_record", "random"])
        if kind == "flip":
            b = bytearray(blob)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            case = bytes(b)
        elif kind == "bytes":
            b = bytearray(blob)
            i = rng.randrange(len(b))
            b[i:i + rng.randint(1, 8)] = os.urandom(rng.randint(0, 8))
            case = bytes(b)
        elif kind == "truncate":
            case = blob[:rng.randrange(len(blob))]
        elif kind == "extend":
            case = blob + os.urandom(rng.randint(1, 20))
        elif kind == "garbage_record":
            payload = os.urandom(rng.randint(0, 300))
            method = rng.choice([0, 1, 2, 3, 4, rng.randrange(256)])
            rec = ct._CHUNK.pack(method, rng.randint(0, 5000), len(payload), 0,
                                 ct.crc32(payload))
            case = (ct.header_bytes(ct.scan(blob).header) + rec + struct.pack("<I", ct.crc32(rec))
                    + payload + ct.footer_bytes(1, rng.randint(0, 5000), os.urandom(32)))
            data = None
        else:
            case = ct.MAGIC[:rng.randint(0, 8)] + os.urandom(rng.randint(0, 200))
            data = None
        counts["cases"] += 1
        try:
            out = llmzip.decompress(case, model=model)
        except ArchiveError as e:
            name = type(e).__name__
            counts["refused"][name] = counts["refused"].get(name, 0) + 1
            continue
        except Exception:  # noqa: BLE001 - that is what we are counting
            counts["crash"] += 1
            crashes.append(traceback.format_exc())
            continue
        if data is not None and out == data:
            counts["exact"] += 1
        else:
            counts["wrong_output"] += 1
    counts["seconds"] = a.seconds
    counts["crash_examples"] = crashes[:3]
    print(json.dumps(counts, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(counts, f, indent=1)
    return 1 if counts["crash"] or counts["wrong_output"] else 0


if __name__ == "__main__":
    sys.exit(main())
