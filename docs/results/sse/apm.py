"""Offline SSE/APM on the top token of level 6's final tables (the rows collect.py saved):
ideal bits/byte with a learned logit offset on the top token by confidence bucket, and
with a paq-style interpolated APM on its probability; the rest of the distribution is
rescaled so every table still sums to one.

    python docs/results/sse/apm.py STATS.npy ORIGINAL_BYTES
"""
import sys, numpy as np, math
a = np.load(sys.argv[1]).astype(np.float64)
P = 2.0**24
pt, py, hit = a[:,0]/P, a[:,1]/P, a[:,2].astype(bool)
N = len(a); BYTES = int(sys.argv[2])
base = -np.log2(py).sum()/BYTES
print(f"base ideal {base:.5f}  top1 acc {hit.mean():.3f}")
def st(p): return math.log(p/(1-p))
def run_delta(nb=24, lr=0.02, ctxmode=0):
    d = np.zeros((nb, 4)); bits = 0.0; prevhit = 0; prevconf = 0
    for i in range(N):
        p = min(max(pt[i], 1e-6), 1-1e-6)
        s = st(p)
        b = min(nb-1, max(0, int((s + 8) / 16 * nb)))
        c = 0 if ctxmode == 0 else (prevhit if ctxmode == 1 else prevhit * 2 + (p > 0.5))
        e = math.exp(d[b, c]); z = 1 - p + p * e
        pn_top = p * e / z
        q = pn_top if hit[i] else py[i] / z
        bits -= math.log2(q)
        d[b, c] -= lr * (pn_top - hit[i])
        prevhit = int(hit[i])
    return bits / BYTES
def run_apm(nb=33, rate=0.02, ctxmode=0, mixw=0.5):
    # paq APM on p_top: table of probabilities over stretch buckets, interpolated
    t = np.array([[1/(1+math.exp(-((j-(nb-1)/2)*16/(nb-1)))) for j in range(nb)] for _ in range(4)])
    bits = 0.0; prevhit = 0
    for i in range(N):
        p = min(max(pt[i], 1e-6), 1-1e-6)
        s = st(p); x = (s + 8) / 16 * (nb-1); x = min(max(x, 0), nb-1-1e-9)
        j = int(x); w = x - j
        c = 0 if ctxmode == 0 else prevhit
        pa = t[c, j]*(1-w) + t[c, j+1]*w
        pn = (1-mixw)*p + mixw*pa
        pn = min(max(pn, 1e-6), 1-1e-6)
        q = pn if hit[i] else py[i] * (1-pn)/(1-p)
        bits -= math.log2(q)
        y = float(hit[i])
        t[c, j] += rate*(1-w)*(y - t[c, j]); t[c, j+1] += rate*w*(y - t[c, j+1])
        prevhit = int(hit[i])
    return bits / BYTES
for lr in (0.005, 0.02, 0.05):
    for cm in (0, 1, 2):
        print(f"delta lr {lr} ctx {cm}: {run_delta(lr=lr, ctxmode=cm):.5f}")
for rate in (0.01, 0.03):
    for cm in (0, 1):
        for mw in (0.25, 0.5, 1.0):
            print(f"apm rate {rate} ctx {cm} mix {mw}: {run_apm(rate=rate, ctxmode=cm, mixw=mw):.5f}")
