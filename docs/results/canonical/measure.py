"""How much probability a level's final tables put on token pairs the tokenizer never
makes (noncanonical bigrams), measured offline.

A BPE tokenizer maps each byte string to one token string, so a token b after a token a
is impossible where tokenizing bytes(a) + bytes(b) does not give [a, b] (for example
" not" then "hing": SmolLM2's tokenizer writes " nothing"). The model never saw such pairs in
training but gives them some probability. Masking them (both sides know the previous
token) and renormalising saves log2(1 / (1 - masked mass)) bits a token, if no pair the
text actually holds is masked; the encoder can check that.

    python docs/results/canonical/measure.py LEVEL FILE [--bytes N] [--min-p P]
        [--test-white-space]

codes FILE at LEVEL in one segment, and for each table sums the mass of the candidates
with probability >= P that form a noncanonical pair with the previous token. Pairs
with a white-space token are never masked: the GPT-2 pre-tokenizer splits white space by
what follows it, so "\r" then "\n" fails the test yet occurs in CRLF text.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("level", type=int)
    ap.add_argument("path")
    ap.add_argument("--bytes", type=int)
    ap.add_argument("--min-p", type=float, default=2.0 ** -14)
    ap.add_argument("--test-white-space", action="store_true",
                    help="test pairs with white-space tokens too (unsound: see above)")
    a = ap.parse_args()

    from llmzip.codec import lockstep
    from llmzip.codec.api import Compressor
    data = open(a.path, "rb").read()[:a.bytes]
    c = Compressor(level=a.level, seg_len=65536)
    tk = c.tokenizer
    tb = tk._id_bytes
    canon: dict = {}
    prev = [None]
    stats = dict(rows=0, base=0.0, gain=0.0, masked=0.0, violations=0, tested=0,
                 cands=0)
    gains: list[float] = []
    viol: list = []
    coded: list[int] = []

    def ok(x: int, y: int) -> bool:
        if not a.test_white_space and (not tb[x].strip() or not tb[y].strip()):
            return True          # white space splits by what follows it: never masked
        key = (x, y)
        r = canon.get(key)
        if r is None:
            ids = tk.encode(tb[x] + tb[y]).tolist()
            r = canon[key] = (ids == [x, y])
            stats["tested"] += 1
        return r

    def bits_of(freqs, symbols, precision):
        f = np.asarray(freqs)
        total = float(1 << precision)
        floor = a.min_p * total
        for r, y in enumerate(np.asarray(symbols).tolist()):
            x = prev[0]
            prev[0] = y
            coded.append(y)
            row = f[r]
            fy = float(row[y])
            stats["rows"] += 1
            stats["base"] += precision - np.log2(fy)
            if x is None or not tb[x]:
                gains.append(0.0)
                continue
            cand = np.nonzero(row >= floor)[0]
            stats["cands"] += len(cand)
            bad = [b for b in cand.tolist() if not ok(x, b)]
            if y in bad or not ok(x, y):
                stats["violations"] += 1
                viol.append((x, y))
                gains.append(0.0)
                continue
            m = float(row[bad].sum()) if bad else 0.0
            stats["masked"] += m / total
            g = -np.log2(1.0 - m / total)
            stats["gain"] += g
            gains.append(g)
        return original(freqs, symbols, precision)

    original, lockstep.bits_of = lockstep.bits_of, bits_of
    t0 = time.time()
    blob = c.compress(data)
    if tk.decode(coded) != data:
        raise SystemExit("the tables did not come in text order: is the text one segment "
                         "(at most 65,536 tokens) and all of it text?")
    n = len(data)
    s = stats
    print(f"level {a.level} {os.path.basename(a.path)} {n} bytes -> {len(blob)} "
          f"({8 * len(blob) / n:.4f} bits/byte); {s['rows']} tokens, ideal "
          f"{s['base'] / n:.4f} bits/byte; masked mass {s['masked'] / s['rows']:.4%} a token; "
          f"gain {s['gain'] / n:.4f} bits/byte ({s['gain'] / s['base']:.2%}) -> "
          f"{(s['base'] - s['gain']) / n:.4f}; pairs in the text that fail the test: "
          f"{s['violations']}; {s['cands'] / max(1, s['rows']):.0f} candidates a token, "
          f"{s['tested']} pairs tested; {time.time() - t0:.0f} s", flush=True)
    g = np.array(gains)
    print("gain quantiles (bits a token): 50%% %.4f 90%% %.4f 99%% %.4f max %.4f"
          % tuple(np.quantile(g, [0.5, 0.9, 0.99, 1.0])))
    print("pairs in the text that fail:", [(tb[x], tb[y]) for x, y in viol[:25]])


if __name__ == "__main__":
    main()
