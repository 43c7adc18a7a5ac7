"""Prior mode's LLM mixed bit by bit with online mode's byte context models, offline.

A token's probability splits exactly into its bytes: at each byte of the token the LLM's
mass over the tokens that continue the bytes so far gives a distribution over the next
byte, and after each byte an end-of-token decision (the token that is exactly the bytes
so far, against the longer ones) says whether the token stops there. The product of the
byte and end probabilities is the token's. So the LLM's tables, taken apart this way, can
be mixed with the byte context models of codec/bytecm.c (version 4) at every byte, the
end decisions left to the LLM:

    python docs/results/bytecm/prior.py record FILE OUT.npz       # level 6, one segment
    python docs/results/bytecm/prior.py replay OUT.npz [--lr 8] [--gpt-weight 65536]

record compresses FILE as level 6 does (window 4,096 shifted by 256, bias, match,
n-grams), in one segment so that the tables come in text order, and keeps for every byte
of the text the LLM's masses over the next byte within its token (int64, ~300 MB for
alice29) and every end decision (the exact token's mass, the tokens' mass, the outcome).
replay prints the LLM's cost split into bytes and ends (their sum is the tokens' ideal
bits), then the mixture's: bytes from bytecm's tables (also renormalised over the bytes
some token allows), ends from the LLM. --gpt-weight sets the GPT input's starting weight
in mixer sets A..D (Q16; bytecm.c starts it at 16384 with 4096 on each context, for online
mode's weak GPT; 65536 with the rest 0 starts from the LLM alone). Results in
docs/results.md ("The LLM mixed byte by byte with context models").
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import llmzip.codec.bytecm as bcm  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ensemble"))
from record import Prefixes  # noqa: E402

INIT = ("m->wa[i] = (i % n_in == X_GPT) ? 16384 : (i % n_in < X_GPT ? 4096 : 0);")


def record(path: str, out: str) -> None:
    from llmzip.codec import lockstep
    from llmzip.codec.api import Compressor
    data = open(path, "rb").read()
    c = Compressor(level=6, seg_len=65536)
    tb = c.tokenizer._id_bytes                       # each token id's bytes
    bounds = Prefixes(tb)          # the tokens by their bytes; ranges by prefix
    order = bounds.order

    g, y, ends, tok = [], [], [], []

    def bits_of(freqs, symbols, precision):
        f = np.asarray(freqs)
        for r, t in enumerate(np.asarray(symbols).tolist()):
            cs = np.concatenate([[0], np.cumsum(f[r][order])])
            tok.append(precision - np.log2(float(f[r, t])))
            for j in range(len(tb[t]) + 1):
                lo, ex, hi, kids = bounds(tb[t][:j])
                e, total = int(cs[ex] - cs[lo]), int(cs[hi] - cs[lo])
                if j == len(tb[t]):
                    if e < total:                    # the token ends here: 1
                        ends.append((e, total, 1))
                    break
                if j > 0 and e > 0:                  # it goes on: 0
                    ends.append((e, total, 0))
                g.append(cs[kids[1:]] - cs[kids[:-1]])
                y.append(tb[t][j])
        return original(freqs, symbols, precision)

    original, lockstep.bits_of = lockstep.bits_of, bits_of
    t0 = time.time()
    blob = c.compress(data)
    print(f"{len(data)} bytes -> {len(blob)} ({8 * len(blob) / len(data):.4f} bits/byte), "
          f"{len(tok)} tokens, {time.time() - t0:.0f} s")
    np.savez(out, g=np.array(g, dtype=np.int64), y=np.array(y, dtype=np.uint8),
             ends=np.array(ends, dtype=np.int64), tok=np.array(tok))


def replay(path: str, kw: dict, gpt_weight: int | None) -> None:
    d = np.load(path)
    g, y, ends, tok = d["g"], d["y"].astype(np.int64), d["ends"], d["tok"]
    n = len(y)
    total = g.sum(axis=1)
    byte_bits = -np.log2(g[np.arange(n), y] / total).sum()
    p_end = ends[:, 0] / ends[:, 1]
    end_bits = -np.log2(np.where(ends[:, 2] == 1, p_end, 1 - p_end)).sum()
    print(f"{n} bytes, the LLM alone: tokens {tok.sum() / n:.4f} = bytes {byte_bits / n:.4f}"
          f" + ends {end_bits / n:.4f} bits/byte")
    if gpt_weight is not None:
        src = open(bcm.SOURCE).read()
        assert INIT in src, "bytecm.c's starting weights moved: update INIT"
        variant = os.path.join(tempfile.mkdtemp(), "bytecm_w.c")
        with open(variant, "w") as f:
            f.write(src.replace(INIT, f"m->wa[i] = (i % n_in == X_GPT) ? {gpt_weight} : 0;"))
        bcm.SOURCE = variant
    mx = bcm.BitMixer(1, n, n, 24, **kw)
    gs = (g << 30) // np.maximum(total, 1)[:, None] + 1     # positive entries for bytecm
    live, bits, masked, t0 = np.zeros(1, np.int64), 0.0, 0.0, time.time()
    for i in range(n):
        f = mx.tables_from(live, gs[i:i + 1])[0]
        bits -= np.log2(f[y[i]] / 2 ** 24)
        masked -= np.log2(f[y[i]] / f[g[i] > 0].sum())
        mx.update(y[i:i + 1])
    print(f"mixed {kw} gpt weight {gpt_weight}: bytes {bits / n:.4f} (renormalised "
          f"{masked / n:.4f}) + ends -> {(bits + end_bits) / n:.4f} "
          f"({(masked + end_bits) / n:.4f}) bits/byte, mixer {n / (time.time() - t0):.0f} B/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["record", "replay"])
    ap.add_argument("path", help="record: the text; replay: the recording")
    ap.add_argument("out", nargs="?", help="record: the recording (.npz)")
    ap.add_argument("--gpt-weight", type=int, help="replay: the GPT's starting weight, Q16")
    for k in ("lr", "limit", "apm_rate"):
        ap.add_argument("--" + k.replace("_", "-"), dest=k, type=int)
    a = ap.parse_args()
    if a.what == "record":
        record(a.path, a.out)
    else:
        replay(a.path, {k: getattr(a, k) for k in ("lr", "limit", "apm_rate")
                        if getattr(a, k) is not None}, a.gpt_weight)


if __name__ == "__main__":
    main()
