"""The core benchmark: one file through the model, every figure measured in one run.

``core_benchmark`` compresses and decompresses a file with a model (default SmolLM2-135M)
and reports sizes, bits per byte (real and ideal), compress and decompress bytes/s, model
load time, xz -9e on the same file, and the share of the machine's own matmul peak
(measured in the same run) that the model's FLOPs reach.
"""

from __future__ import annotations

import math
import os
import platform
import time
from datetime import datetime, timezone

from .baselines import LlmzipCodec, get_codec
from .benchreport import format_rate


def matmul_peak(shapes: dict, dtype: str = "float32", threads: int = 1,
                min_seconds: float = 0.3) -> dict:
    """GFLOP/s of torch matmuls {label: (M, K, N)} in dtype on `threads` threads."""
    import torch
    from ..engine.float_engine import DTYPES, resolve_dtype, torch_threads
    dt = DTYPES[resolve_dtype(dtype)]
    out = {}
    g = torch.Generator().manual_seed(0)
    with torch_threads(threads), torch.inference_mode():
        for label, (m, k, n) in shapes.items():
            a = torch.randn(m, k, generator=g).to(dt)
            b = torch.randn(k, n, generator=g).to(dt)
            a @ b                                       # warm-up (kernel selection)
            iters, t0 = 0, time.perf_counter()
            while True:
                a @ b
                iters += 1
                el = time.perf_counter() - t0
                if el >= min_seconds and iters >= 3:
                    break
            out[label] = 2.0 * m * k * n * iters / el / 1e9
    return out


def core_benchmark(path: str, model=None, dtype: str = "auto", threads: int | None = None,
                   batch: int = 64, seg_len: int | None = None, *, fallback: bool = True,
                   attention: str = "auto",
                   peak_seconds: float = 0.3, square: int = 2048,
                   verbose: bool = False) -> dict:
    """Compress and decompress one file with a model (default SmolLM2-135M) and measure,
    in one run: sizes, bits per byte (real and ideal), speeds, model load time, xz -9e on
    the same file, and the model's achieved GFLOP/s against this machine's matmul peak.

    Achieved GFLOP/s = 2 * n_params * tokens / seconds, tokens = Stats.model_tokens (the
    tokens in model-coded chunks; attention-score FLOPs and BOS padding are not counted).
    The peak is measured right after the round trip with the same dtype and thread count:
    matmuls of the model's own shapes at the batch the engine used, (B, C) x (C, ffn) and
    (B, C) x (C, vocab), and a large square one; peak = the fastest of them.
    verbose=True also prints the readable block (format_core).
    """
    from ..codec.api import default_threads
    from ..codec.segment import plan_segments
    from ..codec.tokenizer import tokenizer_for
    from ..engine.host import cpu_flags
    from ..engine.models.registry import LoadedModel, load_model

    with open(path, "rb") as f:
        data = f.read()
    threads = threads or default_threads()
    t0 = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    tokenizer_for(loaded)
    meta_s = time.perf_counter() - t0
    codec = LlmzipCodec(loaded, dtype=dtype, threads=threads, batch=batch, seg_len=seg_len,
                        fallback=fallback, attention=attention, engine="float")
    codec.prepare()                                   # weights in this dtype, untimed
    weights_s = codec.weights_seconds
    prof = codec.compressor.profile

    t0 = time.perf_counter()
    blob = codec.compress(data)
    c_s = time.perf_counter() - t0
    st = codec.last_stats
    t0 = time.perf_counter()
    out = codec.decompress(blob)
    d_s = time.perf_counter() - t0
    ok = out == data

    xz = get_codec("xz-9e")
    t0 = time.perf_counter()
    xz_blob = xz.compress(data)
    xz_s = time.perf_counter() - t0

    cfg = loaded.config
    n_params = cfg.n_params()
    tokens = st.model_tokens
    plan = plan_segments(tokens, prof.seg_len, prof.batch) if tokens else [[1]]
    B = max(len(p) for p in plan)
    shapes = {f"({B},{cfg.n_embd})x({cfg.n_embd},{cfg.ffn_hidden})":
              (B, cfg.n_embd, cfg.ffn_hidden),
              f"({B},{cfg.n_embd})x({cfg.n_embd},{cfg.vocab_size})":
              (B, cfg.n_embd, cfg.vocab_size),
              f"({square},{square})x({square},{square})": (square, square, square)}
    mm = matmul_peak(shapes, dtype, threads, peak_seconds)
    peak = max(mm.values())
    at_batch = max(v for k, v in mm.items() if not k.startswith(f"({square},"))
    flops = 2.0 * n_params * tokens
    gf_c = flops / c_s / 1e9 if c_s else 0.0
    gf_d = flops / d_s / 1e9 if d_s else 0.0
    n = len(data)
    res = {
        "file": os.path.abspath(path), "original_bytes": n, "archive_bytes": len(blob),
        "bits_per_byte": 8 * len(blob) / n if n else None,
        "ideal_bits_per_byte": st.ideal_bits / st.model_bytes if st.model_bytes else None,
        "model_bytes": st.model_bytes, "tokens": tokens, "chunks": dict(st.chunks),
        "compress_seconds": c_s, "decompress_seconds": d_s,
        "compress_bytes_per_s": n / c_s if c_s else None,
        "decompress_bytes_per_s": n / d_s if d_s else None,
        "compress_tokens_per_s": tokens / c_s if c_s else None,
        "decompress_tokens_per_s": tokens / d_s if d_s else None,
        "round_trip": ok,
        "model": loaded.name, "fingerprint": loaded.fingerprint, "n_params": n_params,
        "model_load_seconds": meta_s + weights_s, "model_metadata_seconds": meta_s,
        "model_weights_seconds": weights_s,
        "model_weights_cached": weights_s < 1e-3,
        "dtype": prof.dtype, "attention": prof.attention, "threads": prof.threads,
        "batch": prof.batch,
        "seg_len": prof.seg_len, "segments_per_step": B,
        "xz_bytes": len(xz_blob), "xz_bits_per_byte": 8 * len(xz_blob) / n if n else None,
        "xz_compress_bytes_per_s": n / xz_s if xz_s else None,
        "matmul_gflops": mm, "peak_gflops": peak, "peak_gflops_at_batch": at_batch,
        "model_gflops_compress": gf_c, "model_gflops_decompress": gf_d,
        "share_of_peak_compress": gf_c / peak if peak else None,
        "share_of_peak_decompress": gf_d / peak if peak else None,
        "share_of_batch_matmul_compress": gf_c / at_batch if at_batch else None,
        "torch": prof.torch, "cpu": cpu_flags(), "cpu_count": os.cpu_count(),
        "host": platform.node(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if verbose:
        print(format_core(res))
    return res


def format_core(r: dict) -> str:
    """The readable block for a core_benchmark result."""
    def f(x, spec=".3f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) \
            else format(x, spec)
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"
    gain = (1 - r["archive_bytes"] / r["xz_bytes"]) if r.get("xz_bytes") else None
    lines = [
        f"file            {r['file']}",
        f"model           {r['model']} ({r['n_params']:,} params, sha256 "
        f"{r['fingerprint'][:16]}…), dtype {r['dtype']}, attention "
        f"{r.get('attention', 'torch-f32')}, threads {r['threads']}, "
        f"batch {r['batch']}, seg_len {r['seg_len']} ({r['segments_per_step']} segments "
        f"per step)",
        f"sizes           {r['original_bytes']:,} -> {r['archive_bytes']:,} bytes "
        f"(round trip {'OK' if r['round_trip'] else 'FAILED'})",
        f"bits/byte       {f(r['bits_per_byte'], '.4f')} (ideal {f(r['ideal_bits_per_byte'], '.4f')}"
        f", model-coded {r['model_bytes']:,} bytes = {r['tokens']:,} tokens)",
        f"xz -9e          {r['xz_bytes']:,} bytes, {f(r['xz_bits_per_byte'], '.4f')} bits/byte"
        + (f"; llmzip is {abs(gain) * 100:.1f}% {'smaller' if gain >= 0 else 'LARGER'}"
           if gain is not None else ""),
        f"compress        {r['compress_seconds']:.2f} s, "
        f"{format_rate(r['compress_bytes_per_s'])}, "
        f"{f(r['compress_tokens_per_s'], '.1f')} tokens/s",
        f"decompress      {r['decompress_seconds']:.2f} s, "
        f"{format_rate(r['decompress_bytes_per_s'])}, "
        f"{f(r['decompress_tokens_per_s'], '.1f')} tokens/s",
        f"model load      {r['model_load_seconds']:.2f} s (metadata+fingerprint "
        f"{r['model_metadata_seconds']:.2f} s, weights {r['model_weights_seconds']:.2f} s"
        + (", already in memory" if r.get("model_weights_cached") else "") + ")",
        "matmul GFLOP/s  " + ", ".join(f"{k} {v:.1f}" for k, v in r["matmul_gflops"].items()),
        f"model GFLOP/s   compress {r['model_gflops_compress']:.2f}, decompress "
        f"{r['model_gflops_decompress']:.2f} = {pct(r['share_of_peak_compress'])} / "
        f"{pct(r['share_of_peak_decompress'])} of the measured peak "
        f"{r['peak_gflops']:.1f} ({pct(r['share_of_batch_matmul_compress'])} of "
        f"the batch-shaped matmul rate when compressing)",
    ]
    return "\n".join(lines)
