"""Time the exact engine's decoding steps as the context grows (no adaptive models, no
range coder): what one-token-at-a-time decoding costs at a level, apart from the rest.

    python docs/results/levels/step_time.py [--level 9] [--segments 1] [--tokens 8704]

Steps `--segments` segments of alice29.txt's tokens side by side through the engine's
lockstep (the decoder's loop) and prints the mean time per step over each 512 steps;
past the level's window the slides are included.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from llmzip.codec.api import Compressor  # noqa: E402

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..",
                      "shared", "corpus", "alice29.txt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--level", type=int, default=9)
    ap.add_argument("--segments", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=8704, help="steps (tokens per segment)")
    ap.add_argument("--file", default=CORPUS)
    a = ap.parse_args()
    c = Compressor(level=a.level)
    ids = np.asarray(c.tokenizer.encode(open(a.file, "rb").read()), dtype=np.int64)
    print(f"level {a.level}, {c.model.name}, {a.segments} segment(s), {c.engine.threads()} "
          f"threads; {len(ids)} tokens in the file", flush=True)
    t0 = last = time.perf_counter()

    def choose(t, live, tables):
        nonlocal last
        if t % 512 == 511:
            now = time.perf_counter()
            print(f"steps {t - 510:6d}..{t + 1:6d}: {(now - last) / 512 * 1000:6.1f} ms/step",
                  flush=True)
            last = now
        return ids[(live * a.tokens + t) % len(ids)]

    c.engine.lockstep([a.tokens] * a.segments, choose)
    print(f"{a.tokens} steps in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
