"""record.py's bytes without the text's token boundaries: what a decoder could compute.

record.py takes each byte's state (the tokens before it, the first bytes u of its
token) from the whole text's tokenization, which a decoder, byte by byte, does not have.
Here byte i's distribution comes from x_<i alone, as a mixture over covers (Phan et al.
2024, "Exact byte-level probabilities from tokenized language models"): the last token
starts at some k among the last --longest bytes, the tokens before it are a tokenization
S of x_<k (x_<k's own, or what x_<i's tokenization gets where a byte of PROBES follows:
a pre-tokenizer that looks ahead splits white space differently), and r = x[k:i] must
start some token. A cover weighs P(S) · T, T the mass of the tokens that start with r in
the table after S; within it byte b gets the mass of the tokens that start with r·b and,
where r is itself a token, r's mass times the first-byte distribution of the table
after S + [r]. Healing only the last token of x_<i's tokenization instead gave 1.76
bits/byte on 1,500 bytes of alice29, where these covers give 1.23 (tokens 1.24).

Every table is computed: a float32 forward pass over the text's tokens with a KV cache,
each step also feeding, in further rows of the batch, the sequences that leave the
text's tokens there. The models' raw tables: no adaptive models, no window (the sample
must fit the model's context). Tokens more than 64 bytes back are the text's own.

    python docs/results/ensemble/honest.py MODEL FILE OUT [--bytes N] [--longest L]

writes OUT-honest.npz (covers) and OUT-whole.npz (the same model and bytes, each byte's
state from the whole text's tokenization as in record.py), in record.py's layout, for
mix.py. Results in docs/results.md ("Two models mixed byte by byte").
"""

import argparse
import bisect
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", ".."), HERE]
from record import Prefixes  # noqa: E402


CHUNK = 15                                 # sequences off the text's tokens per pass
PROBES = (b"a", b" a", b"\n", b".")       # bytes that may follow, for the tokenizations


def main() -> None:
    from llmzip.codec.tokenizer import tokenizer_for
    from llmzip.engine.models.gpt import KVCache
    from llmzip.engine.models.registry import load_model
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("path")
    ap.add_argument("out")
    ap.add_argument("--bytes", type=int, default=20000)
    ap.add_argument("--longest", type=int, default=24,
                    help="covers whose last token starts at most this many bytes back")
    a = ap.parse_args()
    data = open(a.path, "rb").read()[:a.bytes]
    lm = load_model(a.model)
    gpt = lm.gpt(torch.float32)
    tk = tokenizer_for(lm)
    tb = tk._id_bytes
    state = Prefixes(tb)
    order = state.order

    whole = [int(t) for t in tk.encode(data)]
    B = np.concatenate([[0], np.cumsum([len(tb[t]) for t in whole])]).tolist()
    assert B[-1] == len(data)

    def norm(seq, p=0):
        """seq as (p, d): whole[:p] + d, d empty or leaving whole at p (whole[:p] is
        known to be seq's start)."""
        p = min(p, len(seq))
        while p < len(seq) and p < len(whole) and seq[p] == whole[p]:
            p += 1
        return p, tuple(seq[p:])

    def canon(i, after=b""):
        """The tokenization of data[:i] + after (the text's tokens before a boundary 64
        bytes back kept)."""
        if i == 0 and not after:
            return [], 0
        s = max(0, bisect.bisect_right(B, max(0, i - 64)) - 2)
        return whole[:s] + [int(t) for t in tk.encode(data[B[s]:i] + after)], s

    ids_of = {}
    for t in range(len(tb)):
        if tb[t] and len(tk.encode(tb[t])) == 1:
            ids_of.setdefault(tb[t], int(tk.encode(tb[t])[0]))
    # requests: (key, prefix) -> cont, end; (key, None) -> first bytes; (key, id) -> p
    plans = {"honest": [], "whole": []}
    need: dict = {}
    need_tok: dict = {}

    def variants(k):
        """data[:k]'s tokenizations: alone, and as it is when a letter follows (a
        pre-tokenizer that looks ahead splits trailing white space differently)."""
        sk, s0 = canon(k)
        out = [(sk, s0)]
        if k > 0:
            la, s1 = canon(k, b"a")
            if la and tb[la[-1]] == b"a" and la[:-1] != sk:
                out.append((la[:-1], s1))
        return out

    prefixes = [variants(k) for k in range(len(data))]   # S_k, the tokens of data[:k]
    for i in range(len(data)):
        k = bisect.bisect_right(B, i) - 1                  # byte i is in whole token k
        j = i - B[k]
        if i == 0:
            plans["whole"].append(((0, ()), None, None))
        elif j > 0:
            plans["whole"].append(((k, ()), tb[whole[k]][:j], (k, ())))
        else:
            plans["whole"].append(((k - 1, ()), tb[whole[k - 1]], (k, ())))
        if i == 0:
            plans["honest"].append([((0, ()), None, None, [])])
            continue
        cands = {}                        # (context's key, k) -> the context's tokens
        for k in range(max(0, i - a.longest), i):          # the last token starts at k
            for sk, s0 in prefixes[k]:
                cands.setdefault((norm(sk, s0), k), (sk, s0))
        for probe in PROBES:              # data[:i]'s tokens as they are when more follows
            q, s0 = canon(i, probe)
            at = i + len(probe)
            for t in range(len(q) - 1, s0 - 1, -1):
                at -= len(tb[q[t]])
                if at < i - a.longest:
                    break
                if at < i:
                    cands.setdefault((norm(q[:t], s0), at), (q[:t], s0))
        covers = []
        for (kc, k), (sk, s0) in cands.items():
            r = data[k:i]
            lo, ex, hi, kids = state(r)
            if lo == hi:                                   # no token starts with r
                continue
            path = [(norm(sk[:t], s0), sk[t]) for t in range(kc[0], len(sk))]
            kend = norm(sk + [ids_of[r]], s0) if r in ids_of else None
            covers.append((kc, r, kend, path))
        plans["honest"].append(covers)
    for ka, pre, kb in plans["whole"]:
        need.setdefault(ka, set()).add(pre)
        if kb is not None:
            need.setdefault(kb, set()).add(None)
    for covers in plans["honest"]:
        for kc, r, kend, path in covers:
            need.setdefault(kc, set()).add(r)
            if kend is not None:
                need.setdefault(kend, set()).add(None)
            for key, t in path:
                need.setdefault(key, set())
                need_tok.setdefault(key, set()).add(t)
    by_p: dict = {}
    for (p, d) in need:
        if d:
            by_p.setdefault(p, []).append(d)
    print(f"{a.model}: {len(data)} bytes, {len(whole)} tokens, {len(need)} tables, "
          f"{sum(map(len, by_p.values()))} off the text's tokens", flush=True)

    got: dict = {}

    def derive(key, logits):
        pr = torch.softmax(logits.double(), dim=-1).numpy()
        cs = np.concatenate([[0.0], np.cumsum(pr[order])])
        for pre in need.get(key, ()):
            lo, ex, hi, kids = state(pre if pre is not None else b"")
            tot = cs[hi] - cs[lo]
            cont = cs[kids[1:]] - cs[kids[:-1]]
            got[key, pre] = (cont / cont.sum(), 0.0, 1.0) if pre is None else \
                (cont / max(tot, 1e-300), (cs[ex] - cs[lo]) / max(tot, 1e-300), tot)
        for t in need_tok.get(key, ()):
            got[key, t] = pr[t]
        return pr

    ids = [lm.bos_id] + whole
    tok_bits = []
    t0 = time.time()
    with torch.inference_mode():
        kv = KVCache(gpt.cfg, CHUNK + 1, len(ids) + 8)
        for p in range(len(whole) + 1):
            alts = sorted(by_p.get(p, []), key=len)
            for c0 in range(0, max(len(alts), 1), CHUNK):
                chunk = alts[c0:c0 + CHUNK]
                T = 1 + max((len(d) for d in chunk), default=0)
                rows = [[ids[p]] + list(d) + [0] * (T - 1 - len(d)) for d in [()] + chunk]
                sub = KVCache.__new__(KVCache)
                sub.k = [t[:len(rows)] for t in kv.k]
                sub.v = [t[:len(rows)] for t in kv.v]
                sub.max_len = kv.max_len
                out = gpt(torch.tensor(rows), sub, pos=p)       # (R, T, V)
                if c0 == 0:
                    pr = derive((p, ()), out[0, 0])
                    if p < len(whole):
                        tok_bits.append(-np.log2(pr[whole[p]]))
                for r, d in enumerate(chunk, 1):
                    derive((p, d), out[r, len(d)])
                del out
            for L in range(len(kv.k)):      # every row holds the text's token at p
                kv.k[L][1:, :, p] = kv.k[L][0, :, p]
                kv.v[L][1:, :, p] = kv.v[L][0, :, p]
            if p % 500 == 0:
                print(f"  {p}/{len(whole)} tokens, {time.time() - t0:.0f} s", flush=True)
    y = np.frombuffer(data, dtype=np.uint8)
    cum = np.concatenate([[0.0], np.cumsum(-np.array(tok_bits) * np.log(2))])
    for name, plan in plans.items():
        rows, n_cov, n_big = [], 0, 0
        for item in plan:
            if name == "whole":
                item = [(item[0], item[1], item[2], [])]
            ws, parts = [], []
            for kc, r, kend, path in item:
                if r is None:
                    ws, parts = [0.0], [got[kc, None][0]]
                    break
                cont, end, tot = got[kc, r]
                if tot <= 0:
                    continue
                lw = np.log(tot) + cum[kc[0]] + sum(np.log(got[key, t]) for key, t in path)
                ws.append(lw)
                parts.append(cont + (end * got[kend, None][0] if kend is not None else 0))
            w = np.exp(np.array(ws) - max(ws))
            mix, wsum = (w[:, None] * np.array(parts)).sum(axis=0), w.sum()
            n_cov += len(w)
            n_big += int((w >= 1e-3 * wsum).sum())
            rows.append(mix / wsum)
        P = np.array(rows)
        P /= P.sum(axis=1, keepdims=True)
        bits = -np.log2(P[np.arange(len(y)), y]).sum()
        print(f"{name}: bytes {bits / len(y):.4f} bits/byte (tokens {sum(tok_bits) / len(y):.4f})"
              f", {n_cov / len(y):.2f} covers a byte, {n_big / len(y):.2f} with 0.1% of the "
              "weight or more", flush=True)
        np.savez(f"{a.out}-{name}.npz", p=P.astype(np.float32), tok=np.array(tok_bits), y=y)


if __name__ == "__main__":
    main()
