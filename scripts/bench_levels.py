#!/usr/bin/env python3
"""Levels and ablation benchmark: actual archive bits/byte and speed, every round trip verified.

    python scripts/bench_levels.py [--file F] [--bytes N] [--sections ablation,levels,corpus]
                                   [--levels 1,3,6] [--corpus F1,F2] [--decode] [--rows 4,5]
                                   [--out docs/results/levels] [-q]

Section "ablation": the default level built up one part at a time (segments from BOS,
the window rebuilt then shifted, the stride, the adaptive bias, the match, n-gram and
temperature models). Section "levels": the chosen levels. Section "corpus": the chosen
levels on each of the --corpus files (compress only unless --decode; --decode also
decodes the ablation rows that skip it, --rows picks ablation rows). Tables go to
stdout, progress to stderr (-q: none); levels.json, .md and .png go to --out (corpus.*
for the corpus section alone). Run it on a quiet machine (`uptime`).
"""

import argparse
import os
import shlex
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from llmzip.tools import levelbench as lb  # noqa: E402
from llmzip.tools.enginebench import machine_info  # noqa: E402

TEXTS = ("alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt", "html", "urls.10K",
         "tinyshakespeare.txt")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default=os.path.join(ROOT, "..", "shared", "corpus", "alice29.txt"))
    p.add_argument("--bytes", type=int, help="only the file's first N bytes")
    p.add_argument("--sections", default="ablation,levels")
    p.add_argument("--levels", default="1,2,3,4,5,6,7", help="comma-separated levels")
    p.add_argument("--corpus", default=",".join(
        os.path.join(ROOT, "..", "shared", "corpus", f) for f in TEXTS),
        help="section corpus: comma-separated files (default: the seven texts)")
    p.add_argument("--decode", action="store_true",
                   help="sections corpus and ablation: also decompress and verify where a "
                   "row skips it (slow: the decoder runs at a third of the encoder's speed)")
    p.add_argument("--rows", help="section ablation: only these rows (comma-separated, from 1)")
    p.add_argument("--out", default=os.path.join("docs", "results", "levels"))
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    log = None if a.quiet else (lambda m: print(f"{time.perf_counter() - t0:7.1f}s {m}",
                                                file=sys.stderr, flush=True))
    with open(a.file, "rb") as f:
        data = f.read()
    label = os.path.basename(a.file)
    if a.bytes:
        data, label = data[:a.bytes], f"{label}[:{a.bytes}]"
    res = {"command": "python scripts/bench_levels.py " + shlex.join(sys.argv[1:] if argv is None else argv),
           "machine": machine_info(), "sections": []}
    # the corpus alone goes to corpus.*, beside the ablation's and levels' levels.*
    stem = "corpus" if a.sections == "corpus" else "levels"
    for sec in a.sections.split(","):
        if sec == "corpus":                       # one section per file, levels as rows
            for path in a.corpus.split(","):
                with open(path, "rb") as f:
                    text = f.read()
                rows = [(name, dict(st, decode=a.decode))
                        for name, st in lb.level_rows([int(x) for x in a.levels.split(",")])]
                s = lb.run(text, rows, os.path.basename(path), log)
                s["title"] = "corpus"
                res["sections"].append(s)
                print(lb.render_text(*lb.table(s)), flush=True)
                lb.write_reports(res, a.out, stem)
            continue
        if sec == "ablation":
            rows = lb.ablation_rows()
            if a.rows:
                picked = a.rows.split(",")
                if not all(x.isdigit() and 1 <= int(x) <= len(rows) for x in picked):
                    p.error(f"--rows: numbers from 1 to {len(rows)}, comma-separated")
                rows = [rows[int(x) - 1] for x in picked]
            if a.decode:
                rows = [(name, dict(st, decode=True)) for name, st in rows]
        elif sec == "levels":
            rows = lb.level_rows([int(x) for x in a.levels.split(",")])
        else:
            p.error(f"unknown section {sec!r}")
        s = lb.run(data, rows, label, log)
        s["title"] = sec
        res["sections"].append(s)
        print(lb.render_text(*lb.table(s)), flush=True)
        lb.write_reports(res, a.out, stem)        # after each section: nothing lost
    print("wrote", ", ".join(lb.write_reports(res, a.out, stem)))
    return 0 if all(r["verified"] is not False for s in res["sections"] for r in s["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
