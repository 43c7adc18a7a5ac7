"""Side-by-side benchmark: llmzip against the classical codecs, on the same files.

``run_bench`` runs every codec on every file and verifies every round trip; each finished
cell is appended to a JSONL file at once, so a long run that stops can be resumed (cells
already there are skipped). It also writes CSV, a Markdown table and a PNG plot of bits
per byte against compress speed with the Pareto front (those reports are benchreport.py).

The one-file measurement of the model itself (speed, load time, matmul peak share) is
in corebench.py.

``run_cli`` implements ``llmzip bench FILES|DIRS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone

from .baselines import CLASSICAL, Codec, LlmzipCodec, classical_codecs, get_codec
from .benchreport import (bytes_per_second, format_table, markdown_report, plot_pareto,
                          summary_lines, write_csv)

DEFAULT_OUT_DIR = "bench-results"
JSONL_NAME = "results.jsonl"
CSV_NAME = "results.csv"
MD_NAME = "results.md"
PNG_NAME = "results.png"


# ----------------------------------------------------------------------------- helpers

def expand_paths(paths) -> list[str]:
    """Files named, and the files under directories named (sorted, hidden ones skipped)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(os.path.join(root, f) for f in sorted(files)
                           if not f.startswith("."))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    seen, uniq = set(), []
    for p in out:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            uniq.append(p)
    return uniq


def _codec_obj(c) -> Codec:
    return get_codec(c) if isinstance(c, str) else c


def cell_key(codec: Codec, path: str, data_sha: str) -> str:
    """Identity of a benchmark cell: codec configuration + file path + file content."""
    params = json.dumps(codec.params(), sort_keys=True, default=str)
    return f"{codec.name}|{params}|{os.path.abspath(path)}|{data_sha[:16]}"


def _timed(fn, arg, min_seconds: float, max_repeat: int):
    """(result, best seconds per call): repeats short calls so small files time fairly."""
    t0 = time.perf_counter()
    out = fn(arg)
    best = time.perf_counter() - t0
    total, n = best, 1
    while total < min_seconds and n < max_repeat:
        t0 = time.perf_counter()
        fn(arg)
        dt = time.perf_counter() - t0
        best = min(best, dt)
        total += dt
        n += 1
    return out, best


def run_cell(codec: Codec, path: str, data: bytes, min_seconds: float = 0.1,
             max_repeat: int = 20) -> dict:
    """Compress, decompress and verify one file with one codec; never raises for a
    codec failure (it is recorded in the row)."""
    row = {"codec": codec.name, "label": codec.label or codec.name, "kind": codec.kind,
           "file": os.path.basename(path), "path": os.path.abspath(path),
           "original_bytes": len(data), "compressed_bytes": None, "bits_per_byte": None,
           "compress_seconds": None, "decompress_seconds": None,
           "compress_bytes_per_s": None, "decompress_bytes_per_s": None,
           "round_trip": False, "error": None, "params": codec.params(),
           "codec_version": codec.version()}
    if not codec.available():
        row["error"] = f"unavailable: {codec.unavailable_reason()}"
        row["available"] = False
        return row
    # classical codecs are repeated on small inputs (best time of several calls);
    # a model codec runs once, its load done beforehand and reported separately
    reps = 1 if codec.kind == "llm" else max_repeat
    try:
        load = codec.prepare()
        if codec.kind == "llm":
            row["model_load_seconds"] = load
    except Exception as e:
        row["error"] = f"prepare: {type(e).__name__}: {e}"
        return row
    try:
        blob, ct = _timed(codec.compress, data, min_seconds, reps)
    except Exception as e:
        row["error"] = f"compress: {type(e).__name__}: {e}"
        return row
    row.update(compressed_bytes=len(blob), compress_seconds=ct,
               bits_per_byte=8 * len(blob) / len(data) if data else None,
               compress_bytes_per_s=bytes_per_second(len(data), ct))
    if isinstance(codec, LlmzipCodec) and codec.last_stats is not None:
        st = codec.last_stats
        row.update(ideal_bits_per_byte=st.ideal_bits / st.model_bytes if st.model_bytes
                   else None, model_bytes=st.model_bytes, model_tokens=st.model_tokens,
                   chunks=dict(st.chunks))
        row["model_load_seconds"] = (row.get("model_load_seconds") or 0.0) \
            + st.model_load_seconds
        row.update({k: row["params"].get(k) for k in ("engine", "kernel", "dtype",
                                                      "threads", "batch", "seg_len",
                                                      "attention")})
    try:
        out, dt = _timed(codec.decompress, blob, min_seconds, reps)
    except Exception as e:
        row["error"] = f"decompress: {type(e).__name__}: {e}"
        return row
    row.update(decompress_seconds=dt,
               decompress_bytes_per_s=bytes_per_second(len(data), dt))
    row["round_trip"] = out == data
    if not row["round_trip"]:
        row["error"] = (f"round trip mismatch: decoded {len(out)} bytes, "
                        f"expected {len(data)}")
    return row


def load_jsonl(path: str) -> list[dict]:
    """Rows of a JSONL file; a torn last line (an interrupted write) is ignored."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(path: str, row: dict) -> None:
    """Append one JSON row (folders made; a torn last line is not glued onto)."""
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    # a torn last line from an interrupted run must not glue onto this row
    needs_nl = False
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            needs_nl = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if needs_nl else "") + json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


class _Bar:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="cell", file=sys.stderr, leave=False)

    def set(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- run_bench

def run_bench(paths, codecs, out_dir: str | None = None, resume: bool = True,
              progress: bool = True, *, jsonl: str | None = None, quiet: bool = False,
              min_seconds: float = 0.1, plot: bool = True) -> list[dict]:
    """Every codec on every file; returns one row per (codec, file) cell.

    paths: files and directories (expanded to the files under them).
    codecs: Codec objects or registry names.
    out_dir: where results.jsonl/.csv/.md/.png go (None: no files, unless jsonl).
    jsonl: another JSONL file to append rows to (and resume from).
    resume: skip cells already recorded in the JSONL file(s), reusing their rows.
    progress: a tqdm bar on stderr when it is a terminal (never when quiet).
    min_seconds: classical codecs repeat each call until this much time has passed (at
        most 20 times) and report the best time; the llmzip codec runs once.
    """
    files = expand_paths(paths)
    codecs = [_codec_obj(c) for c in codecs]
    sinks = []
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        sinks.append(os.path.join(out_dir, JSONL_NAME))
    if jsonl:
        sinks.append(jsonl)
    done: dict[str, dict] = {}
    if resume:
        for s in sinks:
            for r in load_jsonl(s):
                if "key" in r:
                    done[r["key"]] = r
    rows: list[dict] = []
    todo = []
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        sha = hashlib.sha256(data).hexdigest()
        for c in codecs:
            if not c.available():     # reported, never recorded, so a later run retries
                row = run_cell(c, path, data)
                row["key"] = None
                rows.append(row)
                continue
            key = cell_key(c, path, sha)
            if key in done:
                r = dict(done[key])
                r["resumed"] = True
                rows.append(r)
            else:
                rows.append(None)
                todo.append((len(rows) - 1, c, path, key))
    bar = _Bar(len(todo), progress and not quiet)
    try:
        cache: dict[str, bytes] = {}
        for idx, c, path, key in todo:
            if path not in cache:
                cache.clear()
                with open(path, "rb") as f:
                    cache[path] = f.read()
            bar.set(f"{c.name} {os.path.basename(path)}")
            row = run_cell(c, path, cache[path], min_seconds=min_seconds)
            row["key"] = key
            row["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            row["host"] = platform.node()
            for s in sinks:
                append_jsonl(s, row)
            rows[idx] = row
            bar.update()
    finally:
        bar.close()
    if out_dir is not None:
        write_outputs(rows, out_dir, plot=plot)
    return rows


def recorded_rows(paths, out_dir: str) -> list[dict]:
    """Every cell recorded in out_dir's JSONL for these files (any codec, any run; the
    latest row of each cell), in file then codec-registry order. For reports on cells
    that separate runs measured (say, a slow model on some files only). A codec measured
    on a file under several settings (an older engine, say) counts once: its latest row."""
    files = [os.path.abspath(p) for p in expand_paths(paths)]
    latest: dict = {}
    for r in load_jsonl(os.path.join(out_dir, JSONL_NAME)):
        if r.get("key") and r.get("path") in files:
            latest[(r.get("codec"), r["path"])] = r
    order = {n: i for i, n in enumerate(CLASSICAL)}
    return sorted(latest.values(), key=lambda r: (files.index(r["path"]),
                                                  order.get(r["codec"], len(order)),
                                                  r["codec"]))


def write_outputs(rows: list[dict], out_dir: str, plot: bool = True) -> dict:
    """CSV, Markdown and (plot=True) PNG for rows; returns {kind: path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"csv": os.path.join(out_dir, CSV_NAME), "md": os.path.join(out_dir, MD_NAME)}
    write_csv(rows, paths["csv"])
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(markdown_report(rows))
    if plot:
        paths["png"] = os.path.join(out_dir, PNG_NAME)
        plot_pareto(rows, paths["png"])
    return paths


# ----------------------------------------------------------------------------- CLI

def run_cli(args) -> int:
    """``llmzip bench FILES|DIRS``: classical codecs + llmzip (default model or --model).

    Uses args.input, .model, .threads, .batch, .seg_len, .dtype, .memory_limit, .json,
    .quiet; optional (if the parser has them) .out (output directory, default
    ./bench-results), .codecs (comma-separated names), .no_resume.
    """
    from ..errors import LlmzipError, UsageError
    out_dir = getattr(args, "out", None) or DEFAULT_OUT_DIR
    quiet = getattr(args, "quiet", False)
    if getattr(args, "report", False):
        try:
            rows = recorded_rows(args.input, out_dir)
        except FileNotFoundError as e:
            raise UsageError(str(e)) from None
        if not rows:
            raise UsageError(f"no recorded cells for these files in {out_dir}/{JSONL_NAME}; "
                             "run `llmzip bench` on them first")
        write_outputs(rows, out_dir)
        print(format_table(rows), end="")
        return 0
    kw = {"engine": getattr(args, "engine", "exact") or "exact",
          "kernel": getattr(args, "kernel", "auto") or "auto",
          "dtype": getattr(args, "dtype", "auto") or "auto",
          "threads": getattr(args, "threads", None),
          "batch": getattr(args, "batch", 64) or 64,
          "seg_len": getattr(args, "seg_len", None),
          "attention": getattr(args, "attention", "auto") or "auto"}
    if getattr(args, "memory_limit", None):
        kw["memory_limit"] = args.memory_limit
    for k in ("level", "window", "stride", "slide"):      # the level and what overrides it
        if getattr(args, k, None) is not None:
            kw[k] = getattr(args, k)
    if getattr(args, "adapt", None) is not None:
        from ..codec.adapt import AdaptConfig
        kw["adapt"] = AdaptConfig.parse(args.adapt).to_dict()
    if getattr(args, "model", None) is None and kw.get("level"):
        from ..codec.levels import level_settings
        args.model = level_settings(kw["level"])["model"]     # -8, -9: Gemma
    names = getattr(args, "codecs", None)
    try:
        if names:
            codecs = []
            for n in str(names).split(","):
                n = n.strip()
                codecs.append(LlmzipCodec(args.model, **kw) if n == "llmzip"
                              else get_codec(n))
        else:
            codecs = classical_codecs(include_unavailable=True)
            codecs.append(LlmzipCodec(getattr(args, "model", None), **kw))
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    missing = [c for c in codecs if not c.available()]
    for c in missing:
        if not quiet:
            print(f"llmzip bench: skipping {c.name}: {c.unavailable_reason()}",
                  file=sys.stderr)
    codecs = [c for c in codecs if c.available()]
    try:
        files = expand_paths(args.input)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    rows = run_bench(files, codecs, out_dir=out_dir,
                     resume=not getattr(args, "no_resume", False),
                     progress=not quiet, jsonl=getattr(args, "json", None), quiet=quiet)
    print(format_table(rows), end="")
    lines = summary_lines(rows)
    if lines:
        print()
        print("\n".join(lines))
    if not quiet:
        print(f"llmzip bench: results in {out_dir}/ ({JSONL_NAME}, {CSV_NAME}, {MD_NAME}, "
              f"{PNG_NAME})" + (f" and {args.json}" if getattr(args, "json", None) else ""),
              file=sys.stderr)
    bad = [r for r in rows if r.get("kind") == "llm" and not r.get("round_trip")]
    if bad:
        raise LlmzipError(f"llmzip round trip failed on {len(bad)} file(s): "
                          + "; ".join(f"{r['file']}: {r.get('error')}" for r in bad))
    return 0
