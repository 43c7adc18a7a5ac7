"""Engine benchmark: the float engine next to the exact engine, in one run on one machine.

Each measurement is a function returning plain dicts (scripts/bench_engine.py runs them
all and writes engine.json, engine.md and engine.png): `compare` (one input through both
engines: seconds, B/s, archive and ideal bits/byte, round trips verified, else FAIL),
`gops` (the exact engine's achieved integer GOP/s during a compress, from the model
config's multiply-adds, against its int16 x int8 GEMM kernel and fp32 torch.mm on one
large shape, measured in the same run) and `under_load` (loaded / quiet time ratios
beside one other CPU-bound process). Each engine's model is loaded once (`EngineHandle`)
and warmed up by a tiny round trip; loading, warm-up and the decoder's per-archive weight
packing are reported apart and kept out of every B/s.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime, timezone

from ..codec.api import Compressor
from ..codec.decompressor import Decompressor

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
SAMPLE_BYTES = 12_000                    # the quickstart sample of alice29.txt
WARM_BYTES = 200
TARGETS = {"file_compress_speedup": 4.0, "file_decompress_speedup": 1.5,
           "sample_compress_speedup": 10.0, "loaded_ratio_max": 2.5}


def _log(log, msg: str) -> None:
    if log is not None:
        log(msg)


def loadavg() -> float | None:
    """The 1-minute load average (None where there is none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine_info() -> dict:
    """CPU model name, the flags that select kernels, cores, torch version, load."""
    import torch
    name, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name is None:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"cpu": name, "flags": {f: f in flags for f in FLAGS},
            "cores": os.cpu_count(), "cores_usable": usable, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "host": platform.node(), "loadavg": loadavg(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# ----------------------------------------------------------------------------- counting

def macs_per_token(cfg) -> dict:
    """Multiply-adds of the linear layers for one token, from a GPTConfig or GemmaConfig:
    per layer q, k, v (H + 2K) D x C, o C x H D, gate and up 2 F x C, down C x F; plus the
    output layer V x C. ops = 2 x total (one multiply and one add each)."""
    C, H, K, D, F, V = (cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim,
                        cfg.ffn_hidden, cfg.vocab_size)
    layer = {"qkv": (H + 2 * K) * D * C, "o": C * H * D, "gate_up": 2 * F * C, "down": C * F}
    per_layer = sum(layer.values())
    total = cfg.n_layer * per_layer + V * C
    return {"layer": layer, "per_layer": per_layer, "layers": cfg.n_layer * per_layer,
            "output": V * C, "total": total, "ops": 2 * total}


def attention_ops(cfg, seg_lengths) -> int:
    """2 x 2 x H x D x context, summed over every coded token of every layer: scores and
    the weighted sum. Token p of a segment (0-based) sees p + 1 keys (BOS included), at most
    the window W on a Gemma sliding-window layer."""
    W = getattr(cfg, "sliding_window", 0)
    slide = [W > 0 and hasattr(cfg, "is_sliding") and cfg.is_sliding(i)
             for i in range(cfg.n_layer)]
    keys = sum(W * (W + 1) // 2 + (L - W) * W if s and L > W else L * (L + 1) // 2
               for L in seg_lengths for s in slide)
    return 4 * cfg.n_head * cfg.head_dim * keys


def segment_lengths(n_tokens: int, seg_len: int, batch: int) -> list[int]:
    from ..codec.segment import plan_segments
    return [n for chunk in plan_segments(n_tokens, seg_len, batch) for n in chunk]


# ----------------------------------------------------------------------------- engines

def _record_threads(engine) -> Counter:
    """The thread counts an engine uses: the exact engine asks threads() before every
    forward pass (wrapped here to count the answers); the float engine's is fixed."""
    if getattr(engine, "kind", "") != "exact":
        return Counter({engine.profile.threads: 1})
    if not hasattr(engine, "_bench_counter"):
        inner, engine._bench_counter = engine.threads, Counter()

        def threads():
            n = inner()
            engine._bench_counter[n] += 1
            return n
        engine.threads = threads
    return engine._bench_counter


class BenchDecompressor(Decompressor):
    """A Decompressor that times the engine's set-up apart (the exact engine packs the
    weights for its kernels once per archive) and counts the threads the engine uses."""
    setup_seconds = 0.0
    threads_used: Counter = Counter()

    def _engine_for(self, header, model):
        t0 = time.perf_counter()
        engine = super()._engine_for(header, model)
        if engine.kind == "exact":
            engine.kernel                          # build and pack now, timed apart
        self.setup_seconds += time.perf_counter() - t0
        self.threads_used = _record_threads(engine)
        return engine


class EngineHandle:
    """One engine with the model loaded once and warmed up by a tiny round trip."""

    def __init__(self, engine: str, model=None, *, threads: int | None = None,
                 fallback: bool = True, warm: bytes | None = None, **kw):
        from ..engine.models.registry import LoadedModel, load_model
        t0 = time.perf_counter()
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        t1 = time.perf_counter()
        self.name, self.threads, self.kw = engine, threads, kw
        # level 1: both engines cut the same segments (no window, no adaptive models)
        self.compressor = Compressor(self.model, engine=engine, threads=threads,
                                     fallback=fallback, **{"level": 1, **kw})
        t2 = time.perf_counter()
        warm = warm if warm is not None else b"The quick brown fox jumps over the lazy dog. " * 5
        self.compressor.fallback = False        # the warm-up must go through the model
        try:
            self.warm_ok = self.round_trip(warm[:WARM_BYTES])["round_trip"] == "OK"
        finally:
            self.compressor.fallback = fallback
        t3 = time.perf_counter()
        self.load = {"engine": engine, "model": self.model.name,
                     "model_load_seconds": t1 - t0, "compressor_seconds": t2 - t1,
                     "warmup_seconds": t3 - t2, "warmup_bytes": min(len(warm), WARM_BYTES),
                     "warmup_round_trip": "OK" if self.warm_ok else "FAIL",
                     "load_seconds": t3 - t0}

    def round_trip(self, data: bytes) -> dict:
        """Compress and decompress `data`, timed apart; verified."""
        c = self.compressor
        used = _record_threads(c.engine)          # counts this round trip's compress only
        if c.engine.kind == "exact":
            used.clear()
        la0 = loadavg()
        t0 = time.perf_counter()
        blob = c.compress(data)
        c_s = time.perf_counter() - t0
        st = c.stats
        d = BenchDecompressor(self.model, threads=self.threads)
        err, out = None, None
        t0 = time.perf_counter()
        try:
            out = d.decompress(blob)
        except Exception as e:             # the row says FAIL, the run goes on
            err = f"{type(e).__name__}: {e}"
        d_s = time.perf_counter() - t0 - d.setup_seconds
        n = len(data)
        return {
            "engine": self.name, "bytes": n, "archive_bytes": len(blob),
            "bits_per_byte": 8 * len(blob) / n if n else None,
            "ideal_bits_per_byte": st.ideal_bits / st.model_bytes if st.model_bytes else None,
            "model_bytes": st.model_bytes, "tokens": st.model_tokens, "chunks": dict(st.chunks),
            "compress_seconds": c_s, "decompress_seconds": d_s,
            "decompress_setup_seconds": d.setup_seconds,
            "compress_bytes_per_s": n / c_s if c_s else None,
            "decompress_bytes_per_s": n / d_s if d_s > 0 else None,
            "compress_tokens_per_s": st.model_tokens / c_s if c_s else None,
            "round_trip": "OK" if err is None and out == data else "FAIL", "error": err,
            "kernel": c.engine.kernel_name if c.engine.kind == "exact"
            else f"{c.profile.dtype}, {c.profile.attention}",
            "threads_compress": {str(k): v for k, v in sorted(used.items())},
            "threads_decompress": {str(k): v for k, v in sorted(d.threads_used.items())},
            "seg_len": c.profile.seg_len, "batch": c.profile.batch,
            "loadavg_before": la0, "loadavg_after": loadavg(),
        }


# ----------------------------------------------------------------------------- sections

def _ratio(a, b):
    return a / b if a and b else None


def compare(handles: dict, data: bytes, label: str, log=None) -> dict:
    """Sections 1 and 2: `data` through every engine; speed-ups exact over float."""
    by = {}
    for name, h in handles.items():
        _log(log, f"[{label}] {name}: {len(data):,} bytes ...")
        r = by[name] = dict(h.round_trip(data), label=label)
        _log(log, f"[{label}] {name}: compress {r['compress_seconds']:.2f} s, decompress "
                  f"{r['decompress_seconds']:.2f} s, {r['round_trip']}")
    out = {"label": label, "bytes": len(data), "rows": list(by.values())}
    if "float" in by and "exact" in by:
        for w in ("compress", "decompress"):
            out[f"{w}_speedup"] = _ratio(by["float"][f"{w}_seconds"],
                                         by["exact"][f"{w}_seconds"])
    return out


def gemm_peak(M: int = 2048, K: int = 1536, N: int = 3072, threads: int = 1,
              min_seconds: float = 0.5) -> dict:
    """GOP/s (2 M K N per product) of the exact engine's int16 x int8 GEMM kernel and of
    torch's float32 mm on the same (M, K) x (K, N) shape, on `threads` threads."""
    import torch
    from ..engine.exact.kernels import Kernels
    from .corebench import matmul_peak
    k = Kernels()
    g = torch.Generator().manual_seed(0)
    lim = min(32767, (2 ** 31 - 1) // (127 * K))   # the levels bound: exact int32 sums
    a = torch.randint(-lim, lim + 1, (M, K), generator=g, dtype=torch.int16)
    w = k.pack(torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8))
    k.gemm(a[:64], w, threads)                      # warm-up
    iters, t0 = 0, time.perf_counter()
    while iters < 3 or time.perf_counter() - t0 < min_seconds:
        k.gemm(a, w, threads)
        iters += 1
    el = time.perf_counter() - t0
    f32 = matmul_peak({"f32": (M, K, N)}, "float32", threads, min_seconds)["f32"]
    return {"shape": [M, K, N], "threads": threads, "kernel": k.path,
            "int_gops": 2.0 * M * K * N * iters / el / 1e9, "fp32_gflops": f32}


def gops(handle, row: dict, shape=(2048, 1536, 3072), threads_list=None,
         min_seconds: float = 0.5, log=None) -> dict:
    """Section 3: achieved GOP/s of an exact compress row against the GEMM peak.
    Achieved = tokens x 2 x (linear MACs per token) / compress seconds, and with
    attention's 4 H D x context per token added. The peak is measured at the thread count
    the compress used most, at 1 and at every usable core."""
    cfg = handle.model.config
    macs = macs_per_token(cfg)
    tokens, s = row["tokens"], row["compress_seconds"]
    seg = segment_lengths(tokens, row["seg_len"], row["batch"])
    att = attention_ops(cfg, seg)
    lin_ops = macs["ops"] * tokens
    counts = row["threads_compress"] or {"1": 1}
    used = int(max(counts.items(), key=lambda kv: kv[1])[0])
    usable = machine_info()["cores_usable"] or 1
    threads_list = threads_list or sorted({1, used, usable})
    peaks = []
    for t in threads_list:
        _log(log, f"[gops] GEMM {shape} on {t} thread(s) ...")
        peaks.append(gemm_peak(*shape, threads=t, min_seconds=min_seconds))
    ref = next((p for p in peaks if p["threads"] == used), peaks[-1])
    ach = lin_ops / s / 1e9 if s else None
    ach_att = (lin_ops + att) / s / 1e9 if s else None
    return {"label": row.get("label"), "bytes": row["bytes"], "tokens": tokens,
            "segments": len(seg), "macs_per_token": macs,
            "linear_ops": lin_ops, "attention_ops": att, "compress_seconds": s,
            "threads_used": used, "achieved_gops": ach, "achieved_gops_with_attention": ach_att,
            "peak_int_gops": ref["int_gops"], "peak_fp32_gflops": ref["fp32_gflops"],
            "share_of_int_peak": _ratio(ach, ref["int_gops"]),
            "share_of_int_peak_with_attention": _ratio(ach_att, ref["int_gops"]),
            "kernel": ref["kernel"], "peaks": peaks}


def spinner() -> subprocess.Popen:
    """One other CPU-bound process (the caller kills it)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def under_load(handles: dict, data: bytes, settle: float = 1.0, log=None) -> dict:
    """Section 4: each engine's round trip of `data` quiet, then beside one busy process;
    ratios loaded / quiet for compress and decompress."""
    rows = []
    for name, h in handles.items():
        _log(log, f"[load] {name}: quiet ...")
        quiet = h.round_trip(data)
        p = spinner()
        try:
            time.sleep(settle)                       # let the load be seen
            _log(log, f"[load] {name}: beside pid {p.pid} ...")
            loaded = h.round_trip(data)
        finally:
            p.kill()
            p.wait()
        rows.append({
            "engine": name, "bytes": len(data), "quiet": quiet, "loaded": loaded,
            "compress_ratio": _ratio(loaded["compress_seconds"], quiet["compress_seconds"]),
            "decompress_ratio": _ratio(loaded["decompress_seconds"],
                                       quiet["decompress_seconds"]),
            "round_trip": "OK" if quiet["round_trip"] == loaded["round_trip"] == "OK"
            else "FAIL"})
    return {"bytes": len(data), "rows": rows}


# ----------------------------------------------------------------------------- reports

def _f(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def _threads(d: dict) -> str:
    """"2", or the share of the calls each count got: "1:30%/2:70%", "1:>99%/2:<1%"."""
    def pct(v):
        x = 100 * v / sum(d.values())
        return "<1%" if x < 1 else ">99%" if x > 99 else f"{x:.0f}%"
    return "-" if not d else next(iter(d)) if len(d) == 1 else \
        "/".join(f"{k}:{pct(v)}" for k, v in d.items())


def _x(v, target=None, above=True) -> str:
    if v is None or target is None:
        return _f(v) + ("x" if v is not None else "")
    ok = v >= target if above else v <= target
    return f"{v:.2f}x ({'met' if ok else 'MISSED'}: {'>=' if above else '<='} {target:g}x)"


def _machine(m):
    flags = ", ".join(f for f, v in m["flags"].items() if v) or "none"
    la = m.get("loadavg")
    return [("Machine", ["", ""], [["CPU", m["cpu"]], ["flags", flags],
             ["cores", f"{m['cores']} ({m['cores_usable']} usable)"], ["torch", m["torch"]],
             ["load average (1 min) at start", _f(la)]], [])]


def _load(ld):
    return [("Model load (excluded from every B/s; the model file is loaded once, shared)",
             ["engine", "model", "load s", "compressor s", "warm-up s", "total s"],
             [[r["engine"], r["model"], _f(r["model_load_seconds"]), _f(r["compressor_seconds"]),
               _f(r["warmup_seconds"]), _f(r["load_seconds"])] for r in ld.values()], [])]


def _compare(s, key):
    hdr = ["engine", "bytes", "archive", "bits/byte", "ideal", "compress s", "compress B/s",
           "decompress s", "decompress B/s", "threads c / d", "kernel", "load avg",
           "round trip"]
    rows = [[r["engine"], f"{r['bytes']:,}", f"{r['archive_bytes']:,}",
             _f(r["bits_per_byte"], ".4f"), _f(r["ideal_bits_per_byte"], ".4f"),
             _f(r["compress_seconds"]), _f(r["compress_bytes_per_s"], ",.0f"),
             _f(r["decompress_seconds"]), _f(r["decompress_bytes_per_s"], ",.0f"),
             f"{_threads(r['threads_compress'])} / {_threads(r['threads_decompress'])}",
             str(r["kernel"]), _f(r["loadavg_before"]), r["round_trip"]] for r in s["rows"]]
    tc = TARGETS["file_compress_speedup" if key == "file" else "sample_compress_speedup"]
    td = TARGETS["file_decompress_speedup"] if key == "file" else None
    notes = [f"exact over float, compress: {_x(s.get('compress_speedup'), tc)}",
             f"exact over float, decompress: {_x(s.get('decompress_speedup'), td)}"]
    return [(f"{s['label']} ({s['bytes']:,} bytes)", hdr, rows, notes)]


def _gops(g):
    mc = g["macs_per_token"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    rows = [["linear MACs per token", f"{mc['total']:,} ({mc['layers']:,} in layers, "
             f"{mc['output']:,} output)"],
            ["tokens / segments", f"{g['tokens']:,} / {g['segments']}"],
            ["achieved GOP/s, linear layers", _f(g["achieved_gops"])],
            ["achieved GOP/s, with attention", _f(g["achieved_gops_with_attention"])]]
    rows += [[f"GEMM {'x'.join(map(str, p['shape']))}, {p['threads']} thread(s)",
              f"int16 x int8 ({p['kernel']}) {p['int_gops']:.1f} GOP/s; fp32 torch.mm "
              f"{p['fp32_gflops']:.1f} GFLOP/s"] for p in g["peaks"]]
    rows.append([f"share of the int GEMM peak at {g['threads_used']} thread(s)",
                 f"{pct(g['share_of_int_peak'])} "
                 f"({pct(g['share_of_int_peak_with_attention'])} with attention)"])
    return [(f"Exact engine arithmetic rate while compressing {g.get('label') or 'the input'}"
             f" ({g['bytes']:,} bytes)", ["quantity", "value"],
             rows, [])]


def _under_load(u):
    def thr(r, w):
        return f"{_threads(r['quiet'][w])} -> {_threads(r['loaded'][w])}"
    rows = [[r["engine"], thr(r, "threads_compress"), thr(r, "threads_decompress"),
             _f(r["quiet"]["compress_seconds"]), _f(r["loaded"]["compress_seconds"]),
             _f(r["compress_ratio"]), _f(r["quiet"]["decompress_seconds"]),
             _f(r["loaded"]["decompress_seconds"]), _f(r["decompress_ratio"]),
             f"{_f(r['quiet']['loadavg_before'])} / {_f(r['loaded']['loadavg_before'])}",
             r["round_trip"]] for r in u["rows"]]
    notes = [f"{r['engine']}, {w} loaded / quiet: "
             + _x(r[w + "_ratio"], TARGETS["loaded_ratio_max"] if r["engine"] == "exact"
                  else None, False)
             for r in u["rows"] for w in ("compress", "decompress")]
    return [(f"Beside one busy process ({u['bytes']:,} bytes)",
             ["engine", "compress threads", "decompress threads", "compress quiet s",
              "loaded s", "ratio", "decompress quiet s", "loaded s", "ratio",
              "load avg quiet / loaded", "round trip"],
             rows, notes)]


SECTION_TABLES = {"machine": _machine, "load": _load, "file": lambda s: _compare(s, "file"),
                  "sample": lambda s: _compare(s, "sample"), "gops": _gops,
                  "under_load": _under_load}


def tables(res: dict, only=None) -> list:
    """(title, header, rows, notes) for every section present in a results dict (or in
    `only`, a list of its keys: machine, load, file, sample, gops, under_load)."""
    return [t for k, fn in SECTION_TABLES.items()
            if res.get(k) and (only is None or k in only) for t in fn(res[k])]


def _numeric(hdr, rows) -> list[bool]:
    """Columns whose every cell starts like a number: right-aligned."""
    return [bool(rows) and all(str(c)[:1].isdigit() or str(c)[:1] in "-." for c in col)
            for col in (zip(*rows) if rows else hdr)]


def render_text(title, hdr, rows, notes) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
    num = _numeric(hdr, rows)
    line = lambda r: "  ".join(str(c).rjust(w[i]) if num[i] else str(c).ljust(w[i])  # noqa
                               for i, c in enumerate(r)).rstrip()
    return "\n".join([title, "-" * len(title), line(hdr), *map(line, rows), *notes, ""])


def render_markdown(title, hdr, rows, notes) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    body = [f"| {' | '.join(map(esc, hdr))} |",
            "|" + "".join("---:|" if n else "---|" for n in _numeric(hdr, rows))]
    body += [f"| {' | '.join(map(esc, r))} |" for r in rows]
    return "\n".join([f"### {title}", "", *body, "", *(f"- {n}" for n in notes), ""])


def write_reports(res: dict, out_dir: str) -> list[str]:
    """engine.json (every row), engine.md (the tables) and engine.png (B/s bars)."""
    import json
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("engine.json", "engine.md", "engine.png")]
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1, default=str)
    with open(paths[1], "w", encoding="utf-8") as f:
        f.write("# Engine benchmark: float vs exact\n\n"
                + (f"Command: `{res['command']}`\n\n" if res.get("command") else "")
                + "\n".join(render_markdown(*t) for t in tables(res)))
    write_plot(res, paths[2])
    return paths


def write_plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups, vals = [], {"float": [], "exact": []}
    for key in ("file", "sample"):
        s = res.get(key)
        if not s:
            continue
        by = {r["engine"]: r for r in s["rows"]}
        for way in ("compress", "decompress"):
            groups.append(f"{textwrap.fill(s['label'], 22, break_long_words=False)}\n{way}")
            for e in vals:
                vals[e].append((by.get(e) or {}).get(f"{way}_bytes_per_s") or 0.0)
    fig, ax = plt.subplots(figsize=(max(5, 2.4 * len(groups) + 1), 4.5))
    for i, (e, v) in enumerate(vals.items()):
        xs = [g + (i - 0.5) * 0.38 for g in range(len(groups))]
        bars = ax.bar(xs, v, 0.38, label=f"{e} engine")
        ax.bar_label(bars, labels=[f"{x:,.0f}" for x in v], fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("bytes / s (higher is better)")
    m = res.get("machine", {})
    la = m.get("loadavg")
    ax.set_title(f"llmzip engines on {m.get('cpu', '?')}, {m.get('cores', '?')} cores"
                 f" (load average {_f(la)} at start)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
