#!/usr/bin/env python3
"""Engine benchmark: the float engine next to the exact engine, in one run on one machine.

    python scripts/bench_engine.py [--quick] [--out docs/results/engine] [-q]

Sections: (1) alice29.txt through both engines: compress and decompress B/s, archive and
ideal bits/byte; (2) the quickstart sample (its first 12,000 bytes): seconds; (3) the exact
engine's achieved GOP/s against its int16 x int8 GEMM kernel's peak and fp32 torch.mm on one
large shape; (4) the sample beside one busy process: loaded / quiet time ratios. Every round
trip is verified. Tables go to stdout as each section ends, progress to stderr (-q: none);
engine.json, engine.md and engine.png go to --out. --quick uses a 20 KB slice of the file
instead of all of it. Run it on a quiet machine (`uptime`).
"""

import argparse
import os
import shlex
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from llmzip.tools import enginebench as eb  # noqa: E402

SECTIONS = ("file", "sample", "gops", "load")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default=os.path.join(ROOT, "..", "shared", "corpus",
                                                  "alice29.txt"),
                   help="the file of section 1 (default ../shared/corpus/alice29.txt)")
    p.add_argument("--model", help="model name or GGUF path (default smollm2-135m)")
    p.add_argument("--quick", action="store_true",
                   help="a 20 KB slice of the file instead of the whole file")
    p.add_argument("--sample-bytes", type=int, default=eb.SAMPLE_BYTES,
                   help="the sample of sections 2 and 4: the file's first N bytes (12000)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--gemm", default="2048,1536,3072", help="M,K,N of the peak GEMM")
    p.add_argument("--out", default=os.path.join("docs", "results", "engine"),
                   help="folder for engine.json, engine.md, engine.png")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    sections = [s for s in a.sections.split(",") if s]
    if bad := set(sections) - set(SECTIONS):
        p.error(f"unknown sections: {', '.join(sorted(bad))}")
    t_start = time.perf_counter()
    log = None if a.quiet else (lambda m: print(f"{time.perf_counter() - t_start:7.1f}s {m}",
                                                file=sys.stderr, flush=True))
    with open(a.file, "rb") as f:
        data = f.read()
    base = name = os.path.basename(a.file)
    if a.quick:
        data, name = data[:20_000], f"{name}[:20000]"
    sample = data[:a.sample_bytes]
    res = {"command": "python scripts/bench_engine.py " + shlex.join(sys.argv[1:] if argv is None else argv),
           "input": os.path.abspath(a.file), "quick": a.quick,
           "machine": eb.machine_info(), "targets": eb.TARGETS}

    def show(key):
        for t in eb.tables(res, only=[key]):
            print(eb.render_text(*t), flush=True)

    show("machine")
    handles = {}
    for engine in ("float", "exact"):
        eb._log(log, f"loading the {engine} engine ...")
        handles[engine] = eb.EngineHandle(engine, a.model, warm=data)
    res["load"] = {k: h.load for k, h in handles.items()}
    show("load")
    exact_row = None
    if "file" in sections:
        res["file"] = eb.compare(handles, data, name, log)
        show("file")
        exact_row = next(r for r in res["file"]["rows"] if r["engine"] == "exact")
    if "sample" in sections:
        res["sample"] = eb.compare(handles, sample, f"sample ({base}[:{len(sample)}])", log)
        show("sample")
        exact_row = exact_row or next(r for r in res["sample"]["rows"]
                                      if r["engine"] == "exact")
    if "gops" in sections:
        own = exact_row is None                  # no section 1 or 2: compress here
        if own:
            exact_row = dict(handles["exact"].round_trip(data), label=name)
        res["gops"] = eb.gops(handles["exact"], exact_row,
                              tuple(int(x) for x in a.gemm.split(",")), log=log)
        if own:
            res["gops"]["row"] = exact_row
        show("gops")
    if "load" in sections:
        res["under_load"] = eb.under_load(handles, sample, log=log)
        show("under_load")
    res["seconds"] = time.perf_counter() - t_start
    res["loadavg_end"] = eb.loadavg()
    paths = eb.write_reports(res, a.out)
    eb._log(log, "wrote " + ", ".join(paths))
    rows = [r for k in ("file", "sample") if k in res for r in res[k]["rows"]]
    rows += [r[w] for r in res.get("under_load", {}).get("rows", []) for w in ("quiet", "loaded")]
    rows += [res["gops"]["row"]] if "row" in res.get("gops", {}) else []
    return 0 if all(r["round_trip"] == "OK" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
