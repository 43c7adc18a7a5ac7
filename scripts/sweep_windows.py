#!/usr/bin/env python3
"""Ideal bits/byte of a file under a window plan and several adaptive-model settings, one pass.

    python scripts/sweep_windows.py WINDOW STRIDE SEG_LEN [--slide shift] [--bytes N] [--file F] ADAPT ...

Each ADAPT is an --adapt string ('off', 'bias=14000', 'bias=14000,temper=2000000,match=20000').
The exact engine computes each chunk's logits once (`encode_steps(out="logits")`); every
setting gets its own Adapter fed the same steps, so the rows differ only by the adaptive
models. Prints one JSON line per setting (append them to docs/results/levels/windows.jsonl).
Ideal code lengths: sum of -log2 p over the tokens, as the archive's payload costs them
to within the range coder's overhead.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from llmzip.codec.adapt import AdaptConfig, Adapter  # noqa: E402
from llmzip.codec.segment import plan_segments  # noqa: E402
from llmzip.codec.tokenizer import tokenizer_for  # noqa: E402
from llmzip.engine.exact import ExactEngine, ExactProfile  # noqa: E402
from llmzip.engine.models.registry import load_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("window", type=int)
    p.add_argument("stride", type=int)
    p.add_argument("seg_len", type=int)
    p.add_argument("adapt", nargs="*", default=["off"])
    p.add_argument("--file", default=os.path.join(ROOT, "..", "shared", "corpus", "alice29.txt"))
    p.add_argument("--bytes", type=int)
    p.add_argument("--model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slide", default="", help='"shift" or "" (rebuild from BOS)')
    a = p.parse_intermixed_args()
    m = load_model(a.model)
    data = open(a.file, "rb").read()[:a.bytes]
    ids = np.asarray(tokenizer_for(m).encode(data))
    eng = ExactEngine(m, ExactProfile(window=a.window, stride=a.stride, seg_len=a.seg_len,
                                         slide=a.slide),
                      threads=a.threads)
    cfgs = [AdaptConfig.parse(x) for x in a.adapt]
    bits, spent = [0.0] * len(cfgs), [0.0] * len(cfgs)
    t0, pos = time.time(), 0
    for chunk in plan_segments(len(ids), a.seg_len, 64):
        segs = []
        for n in chunk:
            segs.append(ids[pos:pos + n])
            pos += n
        ads = [Adapter(c, len(segs), m.config.vocab_size, 24, eng.kernel.table) for c in cfgs]
        for t, live, logits in eng.encode_steps(segs, out="logits"):
            y = np.array([segs[i][t] for i in live])
            for k, ad in enumerate(ads):
                f = ad.tables(live, logits)
                bits[k] -= float(np.log2(f[np.arange(len(y)), y] / 2.0 ** 24).sum())
                ad.update(y)
        for k, ad in enumerate(ads):
            spent[k] += ad.seconds
    for c, b, s in zip(cfgs, bits, spent):
        print(json.dumps(dict(file=os.path.basename(a.file), bytes=len(data), model=m.name,
                              window=a.window, stride=a.stride, seg_len=a.seg_len,
                              **({"slide": a.slide} if a.slide else {}),
                              adapt=c.to_dict(), ideal_bpb=round(b / len(data), 4),
                              adapt_s=round(s, 1), total_s=round(time.time() - t0, 1),
                              tokens=len(ids))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
