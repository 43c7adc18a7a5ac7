"""`llmzip eval`: ideal bits per byte of models on texts, the fast measurement path (no
coding).

A text is tokenized exactly as compress does and scored by engine/score.token_bits
(independent chunks of ``context - 1`` tokens after a BOS, or sliding windows with a
``stride``). The result is sum(-log2 p(token)) / bytes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..codec.tokenizer import tokenizer_for
from ..engine.score import token_bits


@dataclass
class EvalResult:
    model: str
    file: str
    bytes: int
    tokens: int
    bits: float
    seconds: float
    context: int
    stride: int | None

    @property
    def bits_per_byte(self) -> float:
        return self.bits / self.bytes if self.bytes else 0.0

    @property
    def bits_per_token(self) -> float:
        return self.bits / self.tokens if self.tokens else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "bits_per_byte": self.bits_per_byte,
                "bits_per_token": self.bits_per_token}


def evaluate(model, data: bytes, context: int = 2048, dtype: str = "auto",
             threads: int = 1, stride: int | None = None, name: str = "") -> EvalResult:
    t0 = time.perf_counter()
    context = min(context, model.config.context_length)
    ids = tokenizer_for(model).encode(data)
    bits = token_bits(model, ids, context, dtype, threads, stride)
    return EvalResult(model.name, name, len(data), len(ids), float(bits.sum()),
                      time.perf_counter() - t0, context, stride)


def summarize(results: list[EvalResult]) -> dict:
    """Per model: overall bits per byte (total bits / total bytes), and the mean of the
    per-file values with a 95% confidence interval across files (Student t)."""
    by_model: dict[str, list[EvalResult]] = {}
    for r in results:
        by_model.setdefault(r.model, []).append(r)
    out = {}
    for m, rs in by_model.items():
        v = np.array([r.bits_per_byte for r in rs])
        half = 0.0
        if len(v) > 1:
            from scipy import stats
            half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        out[m] = {"files": len(rs), "bytes": sum(r.bytes for r in rs),
                  "tokens": sum(r.tokens for r in rs),
                  "bits_per_byte": sum(r.bits for r in rs) / max(1, sum(r.bytes for r in rs)),
                  "mean_file_bpb": float(v.mean()), "ci95": half}
    return out


def run_cli(args) -> int:
    """`llmzip eval --model M [--model M2 ...] FILES`: a table, a summary, JSONL rows.
    With --cluster, one file per task on Ray workers (tools/cluster.py)."""
    import os

    from ..codec.api import default_threads
    from ..engine.models.registry import load_model
    files = []
    for p in args.input:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p)
                            if os.path.isfile(os.path.join(p, f)))
        else:
            files.append(p)
    results = []
    cluster = None
    if getattr(args, "cluster", None):
        from .cluster import Cluster
        cluster = Cluster(args.cluster, args.workers)

    def local(model):
        for path in files:
            with open(path, "rb") as f:
                data = f.read()
            yield evaluate(model, data, args.context, args.dtype,
                           args.threads or default_threads(), args.stride,
                           os.path.basename(path))

    def on_cluster(model, spec):
        """One file per task on the cluster's workers (each loads the model once and
        scores on one thread); results in file order."""
        from .cluster import Pool

        def tasks():
            for path in files:
                with open(path, "rb") as f:
                    yield (f.read(), os.path.basename(path), args.context, args.dtype,
                           args.stride)
        pool = Pool(cluster, "eval", spec if spec is not None else model.path, {},
                    expect={"fingerprint": model.fingerprint, "profile": None},
                    n=args.workers)
        try:
            yield from pool.map(tasks())
        finally:
            pool.close()

    try:
        for spec in args.model or [None]:
            model = load_model(spec)
            tokenizer_for(model)            # built here, outside the timed evaluate()
            for r in (on_cluster(model, spec) if cluster else local(model)):
                results.append(r)
                _print_row(r, args)
    finally:
        if cluster is not None:
            cluster.close()
    _print_summary(results, args)
    return 0


def _print_row(r, args) -> None:
    import json
    print(f"{r.model:16s} {r.file:24s} {r.bytes:9d} B {r.tokens:8d} tok "
          f"{r.bits_per_token:7.3f} bits/tok {r.bits_per_byte:7.4f} bits/byte "
          f"({r.seconds:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(r.to_dict()) + "\n")


def _print_summary(results, args) -> None:
    import sys
    print(f"\ncontext {args.context} tokens after a BOS, "
          + (f"sliding windows with stride {args.stride}" if args.stride
             else "independent chunks (as compress segments them)"), file=sys.stdout)
    for m, s in summarize(results).items():
        print(f"{m:16s} overall {s['bits_per_byte']:.4f} bits/byte over {s['files']} files; "
              f"mean of files {s['mean_file_bpb']:.4f} ± {s['ci95']:.4f} (95% CI)")
