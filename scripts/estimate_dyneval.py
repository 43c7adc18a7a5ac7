"""Estimate what dynamic evaluation would buy: the default model in float32, trained on
each block of a file right after the block is scored (ideal code length, no archive).

Each block of --block tokens is scored with up to --context tokens before it (BOS first);
with --lr > 0 the last --layers transformer blocks and the final norm then take one
optimizer step on that block's loss. --lr 0 is the same plan without learning, the
baseline. Not part of the product: dynamic evaluation is not built in exact arithmetic
(it needs an integer backward pass); this measures whether it is worth building.

    python scripts/estimate_dyneval.py ../shared/corpus/alice29.txt --lr 0
    python scripts/estimate_dyneval.py ../shared/corpus/alice29.txt --lr 1e-4 --layers 6
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from llmzip.tools.bench import append_jsonl  # noqa: E402
from llmzip.codec.tokenizer import tokenizer_for  # noqa: E402
from llmzip.engine.models.registry import load_model  # noqa: E402


def _on_grid(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (w / scale).round().clamp(-127, 127) * scale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--model", default=None, help="default: the default model")
    ap.add_argument("--bytes", type=int, default=0, help="only the first N bytes")
    ap.add_argument("--context", type=int, default=512, help="tokens before each block")
    ap.add_argument("--block", type=int, default=256, help="tokens per block (and step)")
    ap.add_argument("--lr", type=float, default=1e-4, help="0: no learning (baseline)")
    ap.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    ap.add_argument("--layers", type=int, default=6, help="last N blocks are trained")
    ap.add_argument("--part", choices=["block", "mlp", "down", "attn"], default="block",
                    help="what of each trained block learns (default: all of it)")
    ap.add_argument("--int8", action="store_true",
                    help="trained matrices run on a per-row int8 grid (fixed row scales, as "
                         "the exact engine would), learning on float master copies")
    ap.add_argument("--no-norm", action="store_true", help="keep the final norm fixed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="append the result as a JSON line")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    lm = load_model(a.model)
    model = copy.deepcopy(lm.gpt(torch.float32))
    with open(a.file, "rb") as f:
        data = f.read()
    if a.bytes:
        data = data[:a.bytes]
    ids = torch.from_numpy(np.asarray(tokenizer_for(lm).encode(data), dtype=np.int64))
    model.requires_grad_(False)
    params = [] if a.no_norm else [model.norm.weight]
    for b in model.blocks[len(model.blocks) - a.layers:] if a.layers else []:
        params += list({"block": b, "mlp": b.mlp, "down": b.mlp.w_down,
                        "attn": b.attn}[a.part].parameters())
    for p in params:
        p.requires_grad_(True)
    grid = {}
    if a.int8:                                  # forward weights on the int8 grid of W0
        for p in params:
            if p.dim() == 2:
                grid[p] = (p.detach().clone(),
                           p.detach().abs().amax(1, keepdim=True).clamp(min=1e-12) / 127)
                p.data = _on_grid(grid[p][0], grid[p][1])
    opt = (torch.optim.Adam(params, lr=a.lr, betas=(0.0, 0.999)) if a.optimizer == "adam"
           else torch.optim.SGD(params, lr=a.lr))
    bits, t0, N = 0.0, time.perf_counter(), len(ids)
    bos = torch.tensor([lm.bos_id])
    for s in range(0, N, a.block):
        lo = max(0, s - a.context)
        x = torch.cat([bos, ids[lo:s + a.block]])[None]           # (1, T+1): BOS, ctx, block
        with torch.set_grad_enabled(a.lr > 0):
            logits = model(x[:, :-1])                               # (1, T, V)
            lp = F.log_softmax(logits[0, s - lo:], -1)              # the block's positions
            nll = -lp.gather(1, x[0, 1 + s - lo:, None]).squeeze(1)
        bits += float(nll.detach().sum()) / math.log(2)
        if a.lr > 0:
            opt.zero_grad()
            nll.mean().backward()
            if grid:
                for p in params:
                    if p in grid:                # the master learns from the grid's gradient
                        master = grid[p][0]                  # step the master ...
                        p.data, master.data = master.data, p.data
            opt.step()
            if grid:
                for p in params:
                    if p in grid:
                        master, scale = grid[p]
                        p.data, master.data = master.data, p.data
                        p.data = _on_grid(master, scale)   # ... and run on its grid point
        if sys.stderr.isatty():
            print(f"\r{min(N, s + a.block):,}/{N:,} tokens", end="", file=sys.stderr)
    row = {"file": os.path.basename(a.file), "bytes": len(data), "tokens": N,
           "model": lm.name, "context": a.context, "block": a.block, "lr": a.lr,
           "optimizer": a.optimizer, "layers": a.layers, "part": a.part,
           "norm": not a.no_norm, "int8": a.int8, "bpb": round(bits / len(data), 5),
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row), flush=True)
    if a.out:
        append_jsonl(a.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
