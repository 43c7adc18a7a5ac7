"""Mix two recordings of record.py byte by byte; print the ideal bits/byte of each mixer.

    python docs/results/ensemble/mix.py A.npz B.npz [--lr 0.002 0.005 ...]

Every mixer is online: the weights for byte i are learned from bytes before i only, so
each is a code a decoder could repeat, given recordings it could compute (honest.py's
OUT-honest.npz; record.py's recordings and honest.py's OUT-whole.npz know the text's
token boundaries). Rows, for the two models alone and then mixed:
- linear: w·pA + (1 − w)·pB, w the posterior of a two-model Bayes mixture that forgets
  (fixed share 1/64), one w or one per context set;
- geometric: p ∝ pA^a · pB^b (a, b from 1, 0 or 0.5, 0.5, by online gradient steps on
  the code length; lr per step), one weight pair or one per context set.
Context sets: "conf", by the two models' top probabilities (8 x 8 buckets).
"""

import argparse
import json
import os

import numpy as np


def buckets(p: np.ndarray) -> np.ndarray:
    """8 buckets of the top probability: < 0.2, .2-.4, .4-.6, .6-.8, .8-.9, .9-.95, .95-.99, ≥ .99."""
    top = p.max(axis=1)
    return np.searchsorted(np.array([0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99]), top)


def linear(pa, pb, y, ctx, share=1 / 64):
    n = len(y)
    pay, pby = pa[np.arange(n), y], pb[np.arange(n), y]
    w = np.full(ctx.max() + 1, 0.5)
    bits = 0.0
    for i in range(n):
        c = ctx[i]
        q = w[c] * pay[i] + (1 - w[c]) * pby[i]
        bits -= np.log2(q)
        post = w[c] * pay[i] / q
        w[c] = (1 - share) * post + share * 0.5
    return bits / n


def geometric(la, lb, y, ctx, lr, start):
    n = len(y)
    wt = np.tile(np.array(start, dtype=np.float64), (ctx.max() + 1, 1))
    bits = 0.0
    for i in range(n):
        c = ctx[i]
        z = wt[c, 0] * la[i] + wt[c, 1] * lb[i]
        z -= z.max()
        e = np.exp(z)
        s = e.sum()
        q = e / s
        bits -= (z[y[i]] - np.log(s)) / np.log(2)
        wt[c, 0] += lr * (la[i, y[i]] - q @ la[i])   # −d(code length)/da
        wt[c, 1] += lr * (lb[i, y[i]] - q @ lb[i])
    return bits / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--lr", type=float, nargs="*", default=[0.002, 0.005, 0.01])
    ap.add_argument("--json", help="append the rows here")
    ap.add_argument("--label", default="", help="names the recordings in the rows")
    args = ap.parse_args()
    A, B = np.load(args.a), np.load(args.b)
    y = A["y"].astype(np.int64)
    n = min(len(y), len(B["y"]))
    assert (A["y"][:n] == B["y"][:n]).all(), "the recordings are of different bytes"
    y = y[:n]
    pa = np.maximum(A["p"][:n].astype(np.float64), 1e-12)
    pb = np.maximum(B["p"][:n].astype(np.float64), 1e-12)
    pa /= pa.sum(axis=1, keepdims=True)
    pb /= pb.sum(axis=1, keepdims=True)
    la, lb = np.log(pa), np.log(pb)
    rows = []

    def row(name, v):
        rows.append({"mixer": name, "bits_per_byte": round(v, 4)})
        print(f"{name:48s} {v:.4f}", flush=True)

    row(f"A alone, tokens ideal ({args.a})", A["tok"].sum() / n)
    row(f"B alone, tokens ideal ({args.b})", B["tok"].sum() / n)
    row("A alone, bytes folded", -np.log2(pa[np.arange(n), y]).mean())
    row("B alone, bytes folded", -np.log2(pb[np.arange(n), y]).mean())
    one = np.zeros(n, dtype=np.int64)
    conf = buckets(pa) * 8 + buckets(pb)
    row("linear, one weight", linear(pa, pb, y, one))
    row("linear, weights by confidence", linear(pa, pb, y, conf))
    better = 0 if -np.log2(pa[np.arange(n), y]).sum() < -np.log2(pb[np.arange(n), y]).sum() else 1
    start = [1.0, 0.0] if better == 0 else [0.0, 1.0]
    for lr in args.lr:
        row(f"geometric, one pair, lr {lr}", geometric(la, lb, y, one, lr, [0.5, 0.5]))
        row(f"geometric, by confidence, lr {lr}", geometric(la, lb, y, conf, lr, start))
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps({"label": args.label, "a": os.path.basename(args.a),
                                    "b": os.path.basename(args.b), "bytes": n, **r}) + "\n")


if __name__ == "__main__":
    main()
