"""The one-file subcommands: compress, decompress, info, models."""

from __future__ import annotations

import json
import os
import time

from ..errors import UsageError
from ..progress import Progress
from .common import (SUFFIX, _read_input, _say, _write_output, compressor_settings,
                     decompressed_name)
from .corpus import (_peek_header, do_compress_cluster, do_compress_tree, do_decompress_cluster,
                     do_decompress_range, do_extract_tree)


def _compress_online(args, data: bytes, bar):
    from ..codec import online
    t0 = time.perf_counter()
    blob = online.compress_online(data, preset=args.preset, config=args.config,
                                  seed=args.seed, threads=args.threads, progress=bar)
    acc = online.online_accounting(blob)
    from ..codec.api import Stats
    st = Stats(input_bytes=len(data), output_bytes=len(blob), model_bytes=acc["online_bytes"],
               ideal_bits=acc["ideal_bits"], seconds=time.perf_counter() - t0)
    return blob, st


def do_compress(args, path: str, out: str | None) -> None:
    from ..codec.api import Compressor
    if path != "-" and os.path.isdir(path) and not getattr(args, "cluster", None):
        return do_compress_tree(args, path, out)
    if getattr(args, "cluster", None):
        return do_compress_cluster(args, path, out)
    data = _read_input(path)
    bar = Progress(len(data), os.path.basename(path), args.quiet)
    comp = None
    try:
        if getattr(args, "mode", "prior") == "online":
            blob, st = _compress_online(args, data, bar)
        else:
            comp = Compressor(args.model, **compressor_settings(args))
            blob = comp.compress(data, progress=bar)
            st = comp.stats
    finally:
        bar.close()
    if getattr(args, "verify", False):
        from ..codec.decompressor import Decompressor
        from ..errors import ChecksumError
        back = Decompressor(comp.model if comp else None, threads=args.threads,
                            memory_limit=args.memory_limit, kernel=args.kernel,
                            device=args.device).decompress(blob)
        if back != data:
            raise ChecksumError("verification (decode after compress)", "input", "other bytes")
    if out is None:
        out = "-" if path == "-" or args.stdout else path + SUFFIX
    _write_output(out, blob, args, path, binary=True)
    rate = len(data) / st.seconds if st.seconds else 0.0
    ideal = st.ideal_bits / st.model_bytes if st.model_bytes else 0.0
    how = (f"{'+'.join(sorted(st.chunks))} over the whole input: smaller than chunk by "
           "chunk" if st.whole_classical else f"model part: ideal {ideal:.4f}")
    _say(args, f"{path}: {len(data)} -> {len(blob)} bytes, {st.bpb:.4f} bits/byte "
               f"({how}) in {st.seconds:.1f} s ({rate:,.0f} B/s)")
    if args.rm and path != "-" and out != "-":
        os.unlink(path)


def do_decompress(args, path: str, out: str | None, test: bool) -> None:
    from ..codec.decompressor import Decompressor
    if getattr(args, "range", None):
        return do_decompress_range(args, path, out, test)
    header = _peek_header(path)
    if "tree" in header or getattr(args, "file", None):
        return do_extract_tree(args, path, out, test, header)
    if getattr(args, "cluster", None):
        return do_decompress_cluster(args, path, out, test)
    blob = _read_input(path)
    dec = Decompressor(args.model, threads=args.threads, memory_limit=args.memory_limit,
                       allow_engine_mismatch=args.ignore_engine_mismatch, kernel=args.kernel,
                       device=args.device)
    from ..codec import container as ct
    total = ct.scan(blob).footer.original_len
    bar = Progress(total, os.path.basename(path), args.quiet)
    t0 = time.perf_counter()
    try:
        data = dec.decompress(blob, progress=bar)
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    if test:
        _say(args, f"{path}: OK ({len(data)} bytes)")
        return
    if out is None:
        out = decompressed_name(args, path)
    _write_output(out, data, args, path, binary=False)
    _say(args, f"{path}: {len(blob)} -> {len(data)} bytes in {dt:.1f} s "
               f"({len(data) / dt if dt else 0:,.0f} B/s)")
    if args.rm and path != "-" and out != "-":
        os.unlink(path)


def do_info(args) -> None:
    from ..codec import container as ct
    blob = _read_input(args.input)
    info = ct.scan(blob)
    h, f = info.header, info.footer
    by_method: dict = {}
    for c in info.chunks:
        m = by_method.setdefault(c.method_name, {"chunks": 0, "raw": 0, "coded": 0})
        m["chunks"] += 1
        m["raw"] += c.raw_len
        m["coded"] += c.coded_len
    summary = {
        "archive_bytes": info.archive_len, "original_bytes": f.original_len,
        "bits_per_byte": 8 * info.archive_len / f.original_len if f.original_len else None,
        "sha256": f.sha256.hex(), "format_version": info.version, "mode": h.get("mode"),
        "model": h.get("model"), "engine": h.get("engine"), "methods": by_method,
        "overhead_bytes": info.archive_len - sum(c.coded_len for c in info.chunks),
    }
    if h.get("mode") == "online":
        from ..codec.online import online_accounting
        summary["online"] = online_accounting(blob)
    if args.json:
        if args.verbose:
            summary["chunks"] = [vars(c) for c in info.chunks]
        print(json.dumps(summary, indent=2))
        return
    m, e = h.get("model"), h.get("engine")
    bpb = summary["bits_per_byte"]
    print(f"archive       {args.input}: {info.archive_len} bytes, format v{info.version}, "
          f"mode {h.get('mode')}")
    print(f"original      {f.original_len} bytes, sha256 {f.sha256.hex()}")
    if isinstance(h.get("tree"), dict):
        t = h["tree"]
        print(f"folder        {t.get('files')} files, {t.get('entries')} entries, index "
              f"{t.get('index_len')} bytes (`llmzip list` lists them)")
    print(f"bits/byte     {bpb:.4f}" if bpb is not None else "bits/byte     -")
    if isinstance(m, dict):
        print(f"model         {m.get('name')} ({m.get('file')}, {m.get('params', 0):,} "
              f"params, vocab {m.get('vocab')}) sha256 {str(m.get('fingerprint'))[:16]}…")
    if isinstance(e, dict) and e.get("kind") == "exact":
        print(f"engine        exact (integer arithmetic version {e.get('arith')}, integer "
              f"weights {e.get('weights')}; decodes on any machine), segments of "
              f"<= {e.get('seg_len')} tokens x {e.get('batch')}, {e.get('precision')}-bit "
              f"tables")
        if e.get("window"):
            how = ("its keys and values shift" if e.get("slide") == "shift"
                   else "the kept context rebuilt from BOS")
            print(f"window        {e.get('window')} positions sliding by {e.get('stride')} "
                  f"tokens ({how})")
        if e.get("adapt"):
            print("adaptive      " + ", ".join(f"{k} (rate {v})" for k, v in
                                                  sorted(e["adapt"].items())))
    elif isinstance(e, dict):
        print(f"engine        float (llmzip 0.1; decodes where CPU, threads and torch match): "
              f"dtype {e.get('dtype')}, attention "
              f"{e.get('attention', 'torch-f32')}, threads {e.get('threads')}, segments of "
              f"<= {e.get('seg_len')} tokens x {e.get('batch')}, {e.get('precision')}-bit "
              f"tables, torch {e.get('torch')}, constriction {e.get('constriction')}")
    if "online" in summary:
        a = summary["online"]
        print(f"online model  preset {a['preset']}, {a['n_params']:,} params, trained while "
              f"coding; nothing but this header describes it")
        if a.get("mix"):
            how = (f"bitwise context mixing, version {a['mixer']}" if a.get("mixer")
                   else "log-domain mixer")
            print(f"code length   {a['ideal_bits']:.0f} bits (sum of -log2 p over the coded "
                  f"bytes, the GPT mixed with byte context models ({how}); the GPT alone: "
                  f"{a['loss_bits']:.0f} bits)")
        else:
            print(f"loss sum      {a['ideal_bits']:.0f} bits (sum of -log2 p over the coded "
                  f"bytes = area under the training-loss curve)")
        print(f"payload       {a['payload_bits']} bits (coding overhead "
              f"{100 * a['coding_overhead']:+.3f}%), header {a['header_bytes']} bytes")
    print(f"overhead      {summary['overhead_bytes']} bytes (header, chunk records, footer)")
    for name, v in by_method.items():
        r = 8 * v["coded"] / v["raw"] if v["raw"] else 0
        print(f"chunks {name:7s}{v['chunks']:5d} chunks, {v['raw']} -> {v['coded']} bytes "
              f"({r:.3f} bits/byte)")
    if args.verbose:
        for i, c in enumerate(info.chunks):
            print(f"  #{i:<4d} {c.method_name:7s} raw {c.raw_len:9d} coded {c.coded_len:9d} "
                  f"crc {c.raw_crc:08x}")


def do_models(args) -> None:
    from ..engine.models import catalog
    if args.action == "add":
        if not (args.name and args.path):
            raise UsageError("usage: llmzip models add NAME PATH.gguf")
        row = catalog.register(args.name, args.path)
        print(f"registered {row['name']}: {row['arch']}, {row['params']:,} params, {row['path']}")
        return
    if args.action == "remove":
        if not args.name:
            raise UsageError("usage: llmzip models remove NAME")
        catalog.unregister(args.name)
        return
    rows = catalog.list_models()
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        if r.get("status") != "ok":
            print(f"{r['name']:16s} {r['status']}")
            continue
        print(f"{r['name']:16s} {r['arch']:7s} {r['params'] / 1e6:7.1f}M params, vocab "
              f"{r['vocab']:,}, context {r['context']:,}, {r['file_bytes'] / 2**20:.0f} MiB "
              f"({r['quantisation']}), license {r['license']}, {r['where']}: {r['path']}")
