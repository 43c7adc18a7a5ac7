"""Bench reports: the tables (terminal and Markdown), the CSV, the totals per codec and
the plot of bits per byte against speed with its Pareto front.

Everything here reads finished bench rows (dicts, as bench.run_cell makes them and
results.jsonl stores them) and measures nothing; bench.py runs the cells and calls these.
"""

from __future__ import annotations

import csv
import io
import os
import platform

CSV_FIELDS = ["codec", "label", "file", "path", "original_bytes", "compressed_bytes",
              "bits_per_byte", "compress_seconds", "decompress_seconds",
              "compress_bytes_per_s", "decompress_bytes_per_s", "round_trip", "error",
              "ideal_bits_per_byte", "model_load_seconds", "model_tokens", "dtype",
              "threads", "batch", "seg_len", "attention", "codec_version", "key", "finished"]


def bytes_per_second(nbytes: int, seconds: float | None):
    return nbytes / seconds if seconds else None


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in CSV_FIELDS})


def format_rate(bps) -> str:
    if bps is None:
        return "-"
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} B/s"


def _fmt_bpb(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _ok(r) -> str:
    if r.get("error", "") and str(r.get("error")).startswith("unavailable"):
        return "n/a"
    return "yes" if r.get("round_trip") else "FAIL"


def codec_totals(rows: list[dict]) -> list[dict]:
    """Per codec over all its finished cells: total bytes, bpb, speeds, failures."""
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r["codec"], {"codec": r["codec"], "label": r.get("label"),
                                        "files": 0, "original_bytes": 0,
                                        "compressed_bytes": 0, "compress_seconds": 0.0,
                                        "decompress_seconds": 0.0, "failures": 0,
                                        "complete": True})
        t["files"] += 1
        if r.get("compressed_bytes") is None or r.get("decompress_seconds") is None \
                or not r.get("round_trip"):
            t["failures"] += 1
            t["complete"] = False
            continue
        t["original_bytes"] += r["original_bytes"]
        t["compressed_bytes"] += r["compressed_bytes"]
        t["compress_seconds"] += r["compress_seconds"] or 0.0
        t["decompress_seconds"] += r["decompress_seconds"] or 0.0
    for t in out.values():
        n = t["original_bytes"]
        t["bits_per_byte"] = 8 * t["compressed_bytes"] / n if n else None
        t["compress_bytes_per_s"] = bytes_per_second(n, t["compress_seconds"])
        t["decompress_bytes_per_s"] = bytes_per_second(n, t["decompress_seconds"])
    return list(out.values())


def _table(header: list[str], body: list[list[str]], markdown: bool, left: int = 1) -> str:
    """A plain or Markdown table; the first `left` columns are left-aligned."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if i < left else "---:"
                                for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])]
                     + [line(r) for r in body]) + "\n"


def cells_table(rows: list[dict], markdown: bool = False) -> str:
    header = ["file", "codec", "original", "compressed", "bits/byte", "compress",
              "decompress", "ok", "ideal bpb", "load s"]
    body = []
    for r in rows:
        body.append([r["file"], r.get("label") or r["codec"], str(r["original_bytes"]),
                     "-" if r.get("compressed_bytes") is None else str(r["compressed_bytes"]),
                     _fmt_bpb(r.get("bits_per_byte")), format_rate(r.get("compress_bytes_per_s")),
                     format_rate(r.get("decompress_bytes_per_s")), _ok(r),
                     _fmt_bpb(r.get("ideal_bits_per_byte")),
                     "-" if r.get("model_load_seconds") is None
                     else f"{r['model_load_seconds']:.2f}"])
    return _table(header, body, markdown, left=2)


def pivot_table(rows: list[dict], markdown: bool = False) -> str:
    """Bits per byte: one row per file, one column per codec, and a total row."""
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    labels = {r["codec"]: r.get("label") or r["codec"] for r in rows}
    files = list(dict.fromkeys(r["path"] for r in rows))
    by = {(r["path"], r["codec"]): r for r in rows}
    body = []
    for p in files:
        cells = [os.path.basename(p), str(next(r["original_bytes"] for r in rows
                                                if r["path"] == p))]
        for c in codecs:
            r = by.get((p, c))
            if r is None or r.get("bits_per_byte") is None:
                cells.append("-" if r is None or not r.get("error") else "err")
            else:
                cells.append(_fmt_bpb(r["bits_per_byte"]) + ("" if r.get("round_trip")
                                                            else " FAIL"))
        body.append(cells)
    tot = {t["codec"]: t for t in codec_totals(rows)}
    total_bytes = sum(next(r["original_bytes"] for r in rows if r["path"] == p)
                      for p in files)
    # "*": the total covers only some files (failed cells, or cells not run), so it is
    # not comparable with a total over every file
    body.append(["TOTAL", str(total_bytes)]
                + [_fmt_bpb(tot[c]["bits_per_byte"])
                   + ("" if tot[c]["complete"] and tot[c]["files"] == len(files) else "*")
                   for c in codecs])
    return _table(["file", "bytes"] + [labels[c] for c in codecs], body, markdown)


def totals_table(rows: list[dict], markdown: bool = False) -> str:
    header = ["codec", "files", "bits/byte", "compress", "decompress", "failures"]
    body = [[t["label"] or t["codec"], str(t["files"]), _fmt_bpb(t["bits_per_byte"]),
             format_rate(t["compress_bytes_per_s"]), format_rate(t["decompress_bytes_per_s"]),
             str(t["failures"])] for t in codec_totals(rows)]
    return _table(header, body, markdown)


def format_table(rows: list[dict]) -> str:
    """What the terminal shows: every cell for one file, else a bits/byte pivot plus
    per-codec totals (totals count only cells whose round trip succeeded; * marks a
    codec with failures)."""
    files = {r["path"] for r in rows}
    if len(files) <= 1:
        return cells_table(rows)
    return ("bits per byte\n" + pivot_table(rows) + "\nper codec (all files)\n"
            + totals_table(rows))


def markdown_report(rows: list[dict]) -> str:
    out = io.StringIO()
    out.write("# llmzip benchmark\n\n")
    out.write(f"{len({r['path'] for r in rows})} files, {len({r['codec'] for r in rows})} "
              f"codecs; host {platform.node()}, {platform.machine()}, python "
              f"{platform.python_version()}.\n\n")
    out.write("## Bits per byte\n\n" + pivot_table(rows, markdown=True))
    out.write("\n## Per codec, all files\n\n" + totals_table(rows, markdown=True))
    out.write("\n## Every cell\n\n" + cells_table(rows, markdown=True))
    fails = [r for r in rows if not r.get("round_trip")]
    if fails:
        out.write("\n## Failures\n\n")
        for r in fails:
            out.write(f"- {r['codec']} on {r['file']}: {r.get('error')}\n")
    return out.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (speed, bpb) not dominated by another (faster or equal AND no
    more bits, one strictly), sorted by speed."""
    idx = []
    for i, (s, b) in enumerate(points):
        dominated = any((s2 >= s and b2 <= b) and (s2 > s or b2 < b)
                        for j, (s2, b2) in enumerate(points) if j != i)
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def common_paths(rows: list[dict]) -> set[str]:
    """The files that every codec in ``rows`` has a row for."""
    by_codec: dict[str, set[str]] = {}
    for r in rows:
        by_codec.setdefault(r["codec"], set()).add(r["path"])
    return set.intersection(*by_codec.values()) if by_codec else set()


def totals_scope(rows: list[dict], nfiles: int) -> tuple[list[dict], str]:
    """The rows the plot's per-codec circles sum, and how its title says so: the files
    every codec has (like with like), or each codec's own where no file is common to all."""
    shared = common_paths(rows)
    if len(shared) == nfiles:
        return rows, "each codec's files together"
    if shared:
        return ([r for r in rows if r["path"] in shared],
                f"each codec on the {len(shared)} file{'s' * (len(shared) != 1)} "
                "all codecs have")
    return rows, "each codec on its own files (none is common to all)"


def plot_pareto(rows: list[dict], path: str) -> None:
    """PNG: bits per byte against compress speed (log x); small dots per codec and file,
    large per-codec totals over the rows totals_scope picks (the files every codec has, so
    the circles compare like with like when a slow codec ran on fewer files), and the
    Pareto front of the totals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("round_trip") and r.get("compress_bytes_per_s")
          and r.get("bits_per_byte") is not None]
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    cmap = plt.get_cmap("tab10")
    color = {c: cmap(i % 10) for i, c in enumerate(codecs)}
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    for c in codecs:
        pts = [r for r in ok if r["codec"] == c]
        if pts:
            ax.scatter([r["compress_bytes_per_s"] for r in pts],
                       [r["bits_per_byte"] for r in pts], s=18, alpha=0.55,
                       color=color[c])
    nfiles = len({r["path"] for r in rows})
    scope, together = totals_scope(ok, nfiles)
    totals = [t for t in codec_totals(scope) if t["compress_bytes_per_s"]]
    for t in totals:
        part = "" if t["files"] == nfiles else f", {t['files']} of {nfiles} files"
        ax.scatter([t["compress_bytes_per_s"]], [t["bits_per_byte"]], s=110,
                   color=color[t["codec"]], edgecolors="black", linewidths=0.8, zorder=3,
                   label=f"{t['label'] or t['codec']} ({t['bits_per_byte']:.3f}{part})")
    if totals:
        pts = [(t["compress_bytes_per_s"], t["bits_per_byte"]) for t in totals]
        front = pareto_front(pts)
        ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="pre",
                color="black", linestyle="--", linewidth=1, zorder=2,
                label="Pareto front (totals)")
    ax.set_xscale("log")
    ax.set_xlabel("compress speed (bytes/s, log scale)")
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title(f"llmzip bench: {nfiles} file{'s' * (nfiles != 1)}; dots = one file, "
                 f"circles = {together}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if totals:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_lines(rows: list[dict], reference: str = "xz-9e") -> list[str]:
    """Per file: the llmzip codec(s) against the reference codec."""
    out = []
    by = {(r["path"], r["codec"]): r for r in rows}
    for p in dict.fromkeys(r["path"] for r in rows):
        ref = by.get((p, reference))
        for r in rows:
            if r["path"] != p or r.get("kind") != "llm":
                continue
            name = os.path.basename(p)
            if not r.get("round_trip"):
                out.append(f"{name}: {r['codec']} FAILED ({r.get('error')})")
                continue
            line = (f"{name}: {r['codec']} {r['bits_per_byte']:.3f} bits/byte "
                    f"({r['compressed_bytes']} bytes, compress "
                    f"{format_rate(r['compress_bytes_per_s'])}, decompress "
                    f"{format_rate(r['decompress_bytes_per_s'])})")
            if ref and ref.get("round_trip") and ref.get("compressed_bytes"):
                gain = 1 - r["compressed_bytes"] / ref["compressed_bytes"]
                line += (f" vs {ref.get('label') or reference} {ref['bits_per_byte']:.3f}"
                         f" ({ref['compressed_bytes']} bytes, "
                         f"{format_rate(ref['compress_bytes_per_s'])}): "
                         f"{abs(gain) * 100:.1f}% {'smaller' if gain >= 0 else 'LARGER'}")
            out.append(line)
    return out
