"""Two LLMs mixed byte by byte, offline: record each model's next-byte distributions.

SmolLM2 and Gemma tokenize differently, so their tables cannot be mixed token by token;
byte by byte they can. A token model gives a distribution over the next byte this way
(the same split as docs/results/bytecm/prior.py, with the end of a token folded in):
inside a token whose first bytes u are known, the tokens that start with u·b give byte b
their mass; the token that is exactly u (it ends here) gives its mass to the first byte
of the token after it: the next table's first-byte distribution where the coded token
does end here, and where it goes on (the decoder would need a pass that was not run)
the first-byte distribution of the current token's own table. Each row sums to one; a
byte's cost is never above its share of the token's ideal cost.

The token boundaries are the encoder's (the whole text's tokenization), which a decoder
does not know byte by byte: these are bounds for what mixing can give, not a codec.
honest.py measures what a decoder could compute instead.

    python docs/results/ensemble/record.py LEVEL FILE OUT.npz [--bytes N]

records FILE coded at LEVEL (6: SmolLM2, 9: Gemma) in one segment, so that the tables
come in text order: p (N, 256) float32, the folded distributions; tok, the tokens' ideal
bits. mix.py mixes two recordings.
"""

import argparse
import bisect
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


class Prefixes:
    """The vocabulary sorted by its tokens' bytes (tb: each id's bytes). prefixes(u) gives
    the sorted positions of the tokens that start with u [lo, hi), of those equal to it
    [lo, ex), and the 257 bounds of the ranges by the byte after it."""

    def __init__(self, tb: list[bytes]):
        self.order = np.array(sorted((i for i in range(len(tb)) if tb[i]),
                                     key=lambda i: (tb[i], i)))
        self.sb = [tb[i] for i in self.order]
        self.cache: dict = {}

    def __call__(self, prefix: bytes):
        if prefix not in self.cache:
            sb = self.sb
            lo = bisect.bisect_left(sb, prefix)
            hi = lo
            while hi < len(sb) and sb[hi].startswith(prefix):
                hi += 1
            ex = lo
            while ex < hi and sb[ex] == prefix:
                ex += 1
            kids = [bisect.bisect_left(sb, prefix + bytes([v]), ex, hi) for v in range(256)]
            self.cache[prefix] = (lo, ex, hi, np.array(kids + [hi]))
        return self.cache[prefix]


def record(level: int, path: str, out: str, nbytes: int | None) -> None:
    from llmzip.codec import lockstep
    from llmzip.codec.api import Compressor
    data = open(path, "rb").read()[:nbytes]
    c = Compressor(level=level, seg_len=65536)
    tb = c.tokenizer._id_bytes                       # each token id's bytes
    state = Prefixes(tb)
    order = state.order

    rows: list[np.ndarray] = []
    tok: list[float] = []
    coded: list[bytes] = []
    last = [None]                                    # (cont, end) after the last token

    def bits_of(freqs, symbols, precision):
        f = np.asarray(freqs)
        for r, t in enumerate(np.asarray(symbols).tolist()):
            w = tb[t]
            if not w:
                continue
            coded.append(w)
            cs = np.concatenate([[0], np.cumsum(f[r][order], dtype=np.float64)])
            tok.append(precision - np.log2(float(f[r, t])))
            states = []
            for j in range(len(w) + 1):
                lo, ex, hi, kids = state(w[:j])
                total = cs[hi] - cs[lo]
                states.append(((cs[kids[1:]] - cs[kids[:-1]]) / total,
                               (cs[ex] - cs[lo]) / total))
            first = states[0][0] / states[0][0].sum()     # the table's first bytes
            if last[0] is None:
                rows.append(first)
            else:
                cont, end = last[0]
                rows.append(cont + end * first)
            for j in range(1, len(w)):
                cont, end = states[j]
                rows.append(cont + end * first)
            last[0] = states[len(w)]
        return original(freqs, symbols, precision)

    original, lockstep.bits_of = lockstep.bits_of, bits_of
    t0 = time.time()
    blob = c.compress(data)
    if b"".join(coded) != data:
        raise SystemExit("the tables did not come in text order: is the text one segment "
                         "(at most 65,536 tokens) and all of it text?")
    p = np.array(rows, dtype=np.float64)
    y = np.frombuffer(data, dtype=np.uint8)[:len(p)]
    bits = -np.log2(p[np.arange(len(p)), y]).sum()
    print(f"level {level}: {len(data)} bytes -> {len(blob)} ({8 * len(blob) / len(data):.4f}"
          f" bits/byte), {len(tok)} tokens ideal {sum(tok) / len(data):.4f}, folded bytes "
          f"{bits / len(data):.4f}, {len(p)} rows, {time.time() - t0:.0f} s", flush=True)
    np.savez(out, p=p.astype(np.float32), tok=np.array(tok), y=y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("level", type=int)
    ap.add_argument("path")
    ap.add_argument("out")
    ap.add_argument("--bytes", type=int)
    a = ap.parse_args()
    record(a.level, a.path, a.out, a.bytes)


if __name__ == "__main__":
    main()
