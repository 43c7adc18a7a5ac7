"""Attention's weighted sums at the AVX-512 VNNI level: byte products (llmzip 0.14.1)
against the float64 sums of before, on a real KV cache and through the codec.

    python docs/results/engine/attention_values.py [--bytes 60000] [--rounds 2]
        [--level 6] [--sections layer,codec] [--out docs/results/engine/attention_values.jsonl]

1. layer: compresses the first 17,000 bytes of alice29 at level 6 with the engine's
   unfused path, keeps the KV cache and one row's queries at layers 5 and 20 where the
   row sees about 4,000 positions, then times one decoding step's attention of that layer
   (best of 5 x 100 calls) at level 2 (AVX-512BW), level 3 with float64 sums and level 3
   with byte sums, on 1 and 2 threads; the outputs must be equal.
2. codec: compresses and decompresses the file's first --bytes at --level (6) in this
   process, the byte sums on and off in turn (--rounds times); archives and round trips
   must be equal.
Needs a CPU with AVX-512 VNNI. Run it on a quiet machine.
"""

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, ROOT)
from llmzip.engine.exact import fast, kernels  # noqa: E402
from llmzip.tools.enginebench import machine_info  # noqa: E402

CORPUS = os.path.join(ROOT, "..", "shared", "corpus", "alice29.txt")


def capture(data: bytes) -> dict:
    """One row's attention inputs at layers 5 and 20, position >= 3,950, and the cache."""
    from llmzip.codec.api import Compressor
    saved = {}
    orig = kernels.Kernels.attention

    def attention(self, q16, eq, H, K, D, row_b, row_pos, cache, li, window, exp32, threads):
        if li in (5, 20) and li not in saved and int(row_pos.max()) >= 3950:
            i = int(torch.argmax(row_pos))
            saved[li] = dict(args=(q16[i:i + 1].clone(), eq[i:i + 1].clone(), H, K, D,
                                   row_b[i:i + 1].clone(), row_pos[i:i + 1].clone(), cache,
                                   li, window, exp32.clone()))
        return orig(self, q16, eq, H, K, D, row_b, row_pos, cache, li, window, exp32, threads)

    rows = fast.FUSED_ROWS
    kernels.Kernels.attention, fast.FUSED_ROWS = attention, 0
    try:
        Compressor(level=6).compress(data)
    finally:
        kernels.Kernels.attention, fast.FUSED_ROWS = orig, rows
    return saved


def best_of(f, reps: int = 5, n: int = 100) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        ts.append((time.perf_counter() - t0) / n)
    return min(ts)


def layer_rows(data: bytes) -> list[dict]:
    out = []
    for li, s in sorted(capture(data[:17000]).items()):
        args = s["args"]
        want = None
        for name, path, vnni in (("level 2 (AVX-512BW)", "avx512bw", False),
                                 ("level 3, float64 sums", "avx512vnni", False),
                                 ("level 3, byte sums", "avx512vnni", True)):
            k = kernels.Kernels(path)
            old = kernels.attention_vnni_values(vnni)
            try:
                for threads in (1, 2):
                    y = k.attention(*args, threads)
                    if want is None:
                        want = y
                    assert torch.equal(y, want), (name, threads)
                    sec = best_of(lambda: k.attention(*args, threads))
                    row = dict(section="layer", layer=li, position=int(args[6][0]),
                               kernel=name, threads=threads, us=round(1e6 * sec, 1))
                    print(row, flush=True)
                    out.append(row)
            finally:
                kernels.attention_vnni_values(old)
    return out


def codec_rows(data: bytes, rounds: int, level: int) -> list[dict]:
    from llmzip.codec.api import Compressor
    from llmzip.codec.decompressor import Decompressor
    c = Compressor(level=level)
    d = Decompressor(model=c.model)
    assert d.decompress(c.compress(data[:2000])) == data[:2000]   # load and pack first
    out, blobs = [], set()
    for r in range(rounds):
        for vnni in (False, True):
            old = kernels.attention_vnni_values(vnni)
            try:
                t0 = time.perf_counter()
                blob = c.compress(data)
                t1 = time.perf_counter()
                back = d.decompress(blob)
                t2 = time.perf_counter()
            finally:
                kernels.attention_vnni_values(old)
            assert back == data
            blobs.add(blob)
            row = dict(section="codec", level=level, round=r + 1, byte_sums=vnni, bytes=len(data),
                       archive=len(blob), compress_s=round(t1 - t0, 2),
                       decompress_s=round(t2 - t1, 2))
            print(row, flush=True)
            out.append(row)
    assert len(blobs) == 1, "archives differ"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", default=CORPUS)
    ap.add_argument("--bytes", type=int, default=60000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--level", type=int, default=6, help="the codec section's level")
    ap.add_argument("--sections", default="layer,codec")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "attention_values.jsonl"))
    a = ap.parse_args()
    if "avx512vnni" not in kernels.supported_paths():
        raise SystemExit("this CPU has no AVX-512 VNNI: nothing to compare")
    data = open(a.file, "rb").read()[:a.bytes]
    rows = []
    if "layer" in a.sections:
        rows += layer_rows(data)
    if "codec" in a.sections:
        rows += codec_rows(data, a.rounds, a.level)
    cpu = machine_info()["cpu"]
    with open(a.out, "a") as f:
        for row in rows:
            f.write(json.dumps(dict(row, cpu=cpu, date=time.strftime("%Y-%m-%d"))) + "\n")


if __name__ == "__main__":
    main()
