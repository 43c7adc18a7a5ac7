"""Compress a file at the default level and save, for every token, the final table's
top frequency, the coded token's frequency and whether the top token was the coded one.

    python docs/results/sse/collect.py FILE MAX_BYTES OUT.npy
"""
import sys, numpy as np
import llmzip
from llmzip.codec import lockstep as LS
rec = []
orig = LS.bits_of
def wrapped(freqs, symbols, precision):
    f = np.asarray(freqs)
    top = f.argmax(axis=1)
    for r in range(len(symbols)):
        rec.append((f[r, top[r]], f[r, symbols[r]], int(top[r] == symbols[r])))
    return orig(freqs, symbols, precision)
LS.bits_of = wrapped
data = open(sys.argv[1], "rb").read()[: int(sys.argv[2])]
blob = llmzip.compress(data)
a = np.array(rec, dtype=np.int64)
np.save(sys.argv[3], a)
print(len(data), len(blob), 8 * len(blob) / len(data), len(a))
