"""Levels and ablation benchmark: what each part of the codec buys, in actual archive bits.

`run(data, rows)` compresses and decompresses `data` once per row (a row is a name and
Compressor settings: a level, or the ablation's parts added one at a time), verifies
every round trip, and reports the archive's bits/byte (and the ideal), compress and
decompress B/s, and the share of the compress time spent in the adaptive models
(Stats.adapt_seconds, measured in the same process). scripts/bench_levels.py runs it and
writes levels.json, levels.md and levels.png.
"""

from __future__ import annotations

import json
import os
import time

from ..codec.api import Compressor
from ..codec.decompressor import Decompressor
from ..codec.levels import LEVELS
from .enginebench import machine_info, render_markdown, render_text

REBUILT = dict(window=4096, stride=1024, seg_len=16384, slide="rebuild")   # 0.3.0's -6
SHIFTED = dict(window=4096, stride=256, seg_len=16384)                     # level 6's


def ablation_rows() -> list[tuple[str, dict]]:
    """The default level built up one part at a time (SmolLM2), then one part more.
    Decoding is timed where the decoder's work changes (the window, its slide, the
    default)."""
    bias, match, ngram, tau = ({k: LEVELS[7].adapt[k]}
                               for k in ("bias", "match", "ngram", "tau"))
    return [
        ("segments of 2,048 from BOS (level 1)", dict(level=1)),
        ("+ window 4,096 sliding by 1,024, kept context rebuilt (0.3.0), segments of 16,384",
         dict(REBUILT, adapt={})),
        ("+ kept keys and values shifted instead", dict(REBUILT, slide="shift", adapt={})),
        ("+ stride 256", dict(SHIFTED, adapt={}, decode=False)),
        ("+ adaptive bias", dict(SHIFTED, adapt=bias, decode=False)),
        ("+ match model", dict(SHIFTED, adapt={**bias, **match}, decode=False)),
        ("+ n-gram model (level 6, the default)", dict(level=6)),
        ("+ temperature", dict(SHIFTED, adapt={**bias, **match, **ngram, **tau},
                               decode=False)),
    ]


def level_rows(levels) -> list[tuple[str, dict]]:
    return [(f"-{n}: {LEVELS[n].note}", dict(level=n)) for n in levels]


def round_trip(data: bytes, settings: dict, log=None) -> dict:
    """Compress (and with settings["decode"], the default, decompress and compare)."""
    settings = dict(settings)
    decode = settings.pop("decode", True)
    t0 = time.perf_counter()
    comp = Compressor(**settings)
    comp.engine.kernel                      # load and pack the weights before timing
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    blob = comp.compress(data)
    c_s = time.perf_counter() - t0
    st = comp.stats
    n = len(data)
    ok, d_s = None, None
    if decode:
        dec = Decompressor(comp.model)
        t0 = time.perf_counter()
        ok = dec.decompress(blob) == data
        d_s = time.perf_counter() - t0
    row = dict(model=comp.model.name, bytes=len(blob), bpb=8 * len(blob) / n,
               ideal_bpb=st.ideal_bits / n, compress_s=c_s, decompress_s=d_s,
               compress_bps=n / c_s, decompress_bps=n / d_s if d_s else None,
               adapt_s=st.adapt_seconds,
               adapt_share=st.adapt_seconds / max(c_s - st.adapt_seconds, 1e-9),
               # without the tables the engine would make itself: the models' own cost
               adapt_own_share=(st.adapt_seconds - st.adapt_table_seconds)
               / max(c_s - st.adapt_seconds + st.adapt_table_seconds, 1e-9),
               load_s=load, verified=ok, profile=comp.engine_profile())
    if log:
        log(f"{row['bpb']:.4f} bits/byte, {row['compress_bps']:,.0f} / "
            f"{row['decompress_bps'] or 0:,.0f} B/s{'' if ok is not False else '  ROUND TRIP FAILED'}")
    return row


def run(data: bytes, rows, label: str, log=None) -> dict:
    out = []
    for name, settings in rows:
        if log:
            log(f"{name}: {settings}")
        out.append(dict(name=name, settings=settings, **round_trip(data, settings, log)))
    return dict(label=label, input_bytes=len(data), rows=out)


def table(sec: dict):
    hdr = ["configuration", "model", "bits/byte", "ideal", "compress B/s", "decompress B/s",
           "adaptive cost", "beyond tables", "round trip"]
    rows = [[r["name"], r["model"], f"{r['bpb']:.4f}", f"{r['ideal_bpb']:.4f}",
             f"{r['compress_bps']:,.0f}",
             f"{r['decompress_bps']:,.0f}" if r["decompress_bps"] else "not run",
             f"{100 * r['adapt_share']:.1f}%" if r["adapt_s"] else "-",
             f"{100 * r['adapt_own_share']:.1f}%" if r.get("adapt_own_share") else "-",
             {True: "ok", False: "FAIL", None: "not run"}[r["verified"]]]
            for r in sec["rows"]]
    notes = [f"{sec['label']}, {sec['input_bytes']:,} bytes; actual archive bits/byte "
             "(ideal: sum of -log2 p); adaptive cost: time in the adaptive models over the "
             "rest of the compress time, same process; beyond tables: the same without "
             "making the frequency tables from the adapted logits, which the engine does "
             "itself when no adaptive model is on"]
    return f"{sec['title']}: {sec['label']}", hdr, rows, notes


def render(res: dict, markdown: bool = False) -> str:
    m = res["machine"]
    head = (f"CPU: {m.get('cpu')}, {m.get('cores_usable')} CPUs, load {m.get('loadavg')} "
            f"at the start")
    fn = render_markdown if markdown else render_text
    return "\n".join([head, ""] + [fn(*table(s)) for s in res["sections"]])


def write_reports(res: dict, out_dir: str, stem: str = "levels") -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{stem}.{x}") for x in ("json", "md", "png")]
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1, default=str)
    with open(paths[1], "w", encoding="utf-8") as f:
        f.write("# Levels and ablation\n\n" + (f"Command: `{res['command']}`\n\n"
                                               if res.get("command") else "")
                + render(res, markdown=True))
    write_plot(res, paths[2])
    return paths


def write_plot(res: dict, path: str) -> None:
    """Bits/byte against compress speed, one point per row, per section."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for sec, marker in zip(res["sections"], "osD^"):
        xs = [r["compress_bps"] for r in sec["rows"]]
        ys = [r["bpb"] for r in sec["rows"]]
        ax.plot(xs, ys, marker=marker, linestyle="-", label=f"{sec['title']} ({sec['label']})")
        for r, x, y in zip(sec["rows"], xs, ys):
            ax.annotate(r["name"].split(":")[0][:28], (x, y), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
    ax.set_xlabel("compress speed (bytes/s)")
    ax.set_ylabel("archive bits/byte")
    ax.set_title(f"llmzip: bits/byte vs speed ({res['machine'].get('cpu')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
