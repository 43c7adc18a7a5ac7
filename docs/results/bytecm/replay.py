"""Tune online mode's bitwise context mixer offline: record the GPT once, replay the mixer.

The GPT of online mode trains on the data whatever the mixer does, so its logits can be
recorded once (a 17-minute run on tinyshakespeare.txt, 1 thread) and any variant of
codec/bytecm.c replayed on them in two or three minutes (version 4):

    python docs/results/bytecm/replay.py record /tmp/ts [--file F] [--config '{"replay": 4}']
    python docs/results/bytecm/replay.py replay /tmp/ts [--source variant.c] [--version 2]
    python docs/results/bytecm/replay.py alone F [--streams 8]    # no GPT (flat input)

record keeps each step's live streams, the GPT's logits in Q10 log2 units (int16, less
their maximum, floored at -32 bits: the tables are the same to within entries of 1) and
the coded bytes (~290 MB for tinyshakespeare). replay prints the mixture's ideal bits per
byte (-log2 of the coded byte's table entry, summed), which the archive's payload matches
to within ~0.01 %. The numbers in docs/online.md ("Bitwise context mixing") came from it.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import llmzip.codec.bytecm as bcm  # noqa: E402
from llmzip.engine.exact.reference import freqs as exact_freqs  # noqa: E402

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..",
                      "shared", "corpus", "tinyshakespeare.txt")


def record(out: str, path: str, over: dict) -> None:
    from llmzip.codec.online import compress_online
    data = open(path, "rb").read()
    n = len(data)
    os.makedirs(out, exist_ok=True)
    g_all = np.lib.format.open_memmap(os.path.join(out, "g.npy"), mode="w+", dtype=np.int16,
                                      shape=(n, 256))
    live_all, sym_all = np.zeros(n, np.int32), np.zeros(n, np.uint8)
    step_all, pos = np.zeros(n, np.int32), [0, 0]
    tables, update = bcm.BitMixer.tables, bcm.BitMixer.update

    def rec_tables(self, live, logits):
        g = torch.round(logits.double() * (1024 / math.log(2))).long()
        g = (g - g.max(dim=1, keepdim=True).values).clamp(min=-32768).numpy()
        k = pos[0]
        g_all[k:k + len(live)], live_all[k:k + len(live)] = g, live
        step_all[k:k + len(live)] = pos[1]
        return tables(self, live, logits)

    def rec_update(self, sym):
        sym_all[pos[0]:pos[0] + len(sym)] = sym
        pos[0] += len(sym)
        pos[1] += 1
        return update(self, sym)

    bcm.BitMixer.tables, bcm.BitMixer.update = rec_tables, rec_update
    t0 = time.time()
    blob = compress_online(data, config={"preset": "s", **over}, threads=1, fallback=False)
    g_all.flush()
    for name, a in (("live", live_all), ("sym", sym_all), ("step", step_all)):
        np.save(os.path.join(out, name + ".npy"), a)
    print(f"recorded {n} bytes in {time.time() - t0:.0f} s; archive {8 * len(blob) / n:.4f} "
          f"bits/byte")


def replay(d: str, kw: dict) -> None:
    g = np.load(os.path.join(d, "g.npy"), mmap_mode="r")
    live, sym, step = (np.load(os.path.join(d, k + ".npy")) for k in ("live", "sym", "step"))
    n, S = len(sym), int(live.max()) + 1
    mx = bcm.BitMixer(S, -(-n // S), n, 24, **kw)
    cuts = np.flatnonzero(np.diff(step)) + 1
    bits, t0, chunk, base, tab = 0.0, time.time(), 1 << 16, -(1 << 40), None
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [n]])):
        if not (base <= a and b <= base + chunk):
            base = a
            tab = exact_freqs(torch.from_numpy(np.asarray(g[a:a + chunk], dtype=np.int64)),
                              bcm.GPT_PRECISION).numpy()
        f = mx.tables_from(live[a:b], tab[a - base:b - base])
        y = sym[a:b].astype(np.int64)
        bits -= float(np.log2(f[np.arange(b - a), y] / 2 ** 24).sum())
        mx.update(y)
    print(f"{os.path.basename(bcm.SOURCE)} {kw}: {bits / n:.4f} bits/byte "
          f"({n / (time.time() - t0):.0f} B/s)")


def alone(path: str, S: int, kw: dict) -> None:
    data = np.frombuffer(open(path, "rb").read(), dtype=np.uint8)
    n = len(data)
    L = -(-n // S)
    mx = bcm.BitMixer(S, L, n, 24, **kw)
    bits, t0 = 0.0, time.time()
    for j in range(L):
        lv = np.array([s for s in range(S) if s * L + j < n])
        f = mx.tables(lv, None)
        y = data[lv * L + j].astype(np.int64)
        bits -= float(np.log2(f[np.arange(len(lv)), y] / 2 ** 24).sum())
        mx.update(y)
    print(f"{os.path.basename(path)}, {S} streams, no GPT: {bits / n:.4f} bits/byte "
          f"({n / (time.time() - t0):.0f} B/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["record", "replay", "alone"])
    ap.add_argument("path", help="record/replay: the folder; alone: the file")
    ap.add_argument("--file", default=CORPUS, help="record: the text (tinyshakespeare.txt)")
    ap.add_argument("--config", default="{}", help="record: online config overrides, JSON")
    ap.add_argument("--source", help="replay/alone: a variant of codec/bytecm.c")
    ap.add_argument("--streams", type=int, default=8, help="alone: streams")
    for k in ("lr", "limit", "apm_rate", "version"):
        ap.add_argument("--" + k.replace("_", "-"), dest=k, type=int)
    a = ap.parse_args()
    if a.source:
        bcm.SOURCE = os.path.abspath(a.source)
    kw = {k: getattr(a, k) for k in ("lr", "limit", "apm_rate", "version")
          if getattr(a, k) is not None}
    if a.what == "record":
        record(a.path, a.file, json.loads(a.config))
    elif a.what == "replay":
        replay(a.path, kw)
    else:
        alone(a.path, a.streams, kw)


if __name__ == "__main__":
    main()
