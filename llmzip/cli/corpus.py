"""Subcommands beyond one file: directory archives (compress DIR, list, --file), random
access (--range) and the Ray cluster (--cluster)."""

from __future__ import annotations

import json
import os
import sys
import time

from ..errors import ArchiveError, UsageError
from ..progress import Progress
from .common import (SUFFIX, _map_input, _say, _Sink, _target, _write_output,
                     compressor_settings, decompressed_name)
from .parser import _size


def _say_pool(args, ps) -> None:
    if getattr(args, "verbose", False):
        load = max(ps.setup_seconds) if ps.setup_seconds else 0.0
        _say(args, f"cluster: {ps.workers} workers (model load up to {load:.1f} s), "
                   f"{ps.chunks} chunks, {ps.retries} handed out again after a worker died, "
                   f"{ps.task_bytes} bytes sent, {ps.result_bytes} bytes back")


def do_compress_cluster(args, path: str, out: str | None) -> None:
    import contextlib
    from ..tools import cluster as cl
    if getattr(args, "mode", "prior") == "online":
        raise UsageError("--cluster: online mode trains one model over the whole input "
                         "and cannot be split; drop --cluster or --mode online")
    job = None
    if path != "-" and os.path.isdir(path):
        from ..codec import tree
        out = _tree_output(args, path, out)
        job = tree.TreeJob(path)
    elif out is None:
        out = "-" if path == "-" or args.stdout else path + SUFFIX
    with contextlib.ExitStack() as stack:
        data = _map_input(path, stack) if job is None else b""
        bar = Progress(len(data) if job is None else job.original_len,
                       os.path.basename(path.rstrip("/")), args.quiet)
        target, atomic = _target(args, out, path if job is None else None, binary=True)
        if atomic is not None:
            stack.enter_context(atomic)
        cluster = stack.enter_context(cl.Cluster(args.cluster, args.workers))
        try:
            st, ps = cl.compress_to(
                cluster, data, target, args.model, progress=bar, workers=args.workers,
                tree=job, **compressor_settings(args))
        finally:
            bar.close()
        if getattr(args, "verify", False):
            if atomic is None:
                raise UsageError("--verify with --cluster needs an output file (-o)")
            atomic.f.flush()
            with open(atomic.tmp, "rb") as f:
                cl.decompress_to(cluster, f, _Sink(), args.model, workers=args.workers,
                                 threads=args.threads, memory_limit=args.memory_limit,
                                 kernel=args.kernel, device=args.device)
        if atomic is not None:
            atomic.commit()
        n = st.input_bytes
    rate = n / st.seconds if st.seconds else 0.0
    _say(args, f"{path}: {n} -> {st.output_bytes} bytes, {st.bpb:.4f} bits/byte on "
               f"{ps.workers} workers in {st.seconds:.1f} s ({rate:,.0f} B/s)")
    _say_pool(args, ps)
    if args.rm and path != "-" and out != "-":
        os.unlink(path)


def do_decompress_cluster(args, path: str, out: str | None, test: bool) -> None:
    import contextlib
    import io
    from ..tools import cluster as cl
    if out is None and not test:
        out = decompressed_name(args, path)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            f = io.BytesIO(sys.stdin.buffer.read()) if path == "-" else \
                stack.enter_context(open(path, "rb"))
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from None
        if test:
            target, atomic = _Sink(), None
        else:
            target, atomic = _target(args, out, path, binary=False)
        if atomic is not None:
            stack.enter_context(atomic)
        cluster = stack.enter_context(cl.Cluster(args.cluster, args.workers))
        n, ps = cl.decompress_to(cluster, f, target, args.model, workers=args.workers,
                                 threads=args.threads, memory_limit=args.memory_limit,
                                 allow_engine_mismatch=args.ignore_engine_mismatch,
                                 kernel=args.kernel, device=args.device)
        if atomic is not None:
            atomic.commit()
    dt = time.perf_counter() - t0
    _say(args, f"{path}: {'OK, ' if test else ''}{n} bytes on {ps.workers} workers in "
               f"{dt:.1f} s ({n / dt if dt else 0:,.0f} B/s)")
    _say_pool(args, ps)
    if args.rm and not test and path != "-" and out != "-":
        os.unlink(path)


def _tree_output(args, path: str, out: str | None) -> str:
    if getattr(args, "mode", "prior") == "online":
        raise UsageError("a folder is compressed in prior mode only; drop --mode online")
    if args.model == "auto":
        raise UsageError("--model auto chooses a model from a file's sample; for a folder "
                         "name the model")
    if args.rm:
        raise UsageError("--rm does not remove folders; remove it yourself once the "
                         "archive is checked")
    if out is None:
        out = "-" if args.stdout else path.rstrip("/" + os.sep) + SUFFIX
    return out


def do_compress_tree(args, path: str, out: str | None) -> None:
    from ..codec.api import Compressor
    from ..codec import tree
    out = _tree_output(args, path, out)
    job = tree.TreeJob(path)
    comp = Compressor(args.model, **compressor_settings(args))
    bar = Progress(job.original_len, os.path.basename(path.rstrip("/")), args.quiet)
    try:
        blob = comp.compress_tree(path, progress=bar, job=job)
    finally:
        bar.close()
    if getattr(args, "verify", False):
        from ..codec.decompressor import Decompressor
        tree.extract_with(Decompressor(comp.model, threads=args.threads,
                                       memory_limit=args.memory_limit, kernel=args.kernel,
                                       device=args.device), blob, None)
    _write_output(out, blob, args, None, binary=True)
    st = comp.stats
    _say(args, f"{path}: {len(job.files)} files, {job.original_len} bytes (index "
               f"{len(job.index)}) -> {len(blob)} bytes, {st.bpb:.4f} bits/byte in "
               f"{st.seconds:.1f} s")


def _parse_range(text: str) -> tuple[int, int | None]:
    start, sep, length = text.partition(":")
    try:
        if not sep:
            raise ValueError
        a = _size(start)
        b = _size(length) if length.strip() else None
    except ValueError:
        raise UsageError(f"--range takes START:LEN in bytes (e.g. 1000:500, 64k:4k or "
                         f"1M:), not {text!r}") from None
    if a < 0 or (b is not None and b < 0):
        raise UsageError(f"--range: START and LEN must be >= 0, not {text!r}")
    return a, b


def do_decompress_range(args, path: str, out: str | None, test: bool) -> None:
    import io
    from ..codec.decompressor import Decompressor
    start, length = _parse_range(args.range)
    if out is None and not test:
        raise UsageError("--range writes a part of the original: give -o FILE or -c")
    dec = Decompressor(args.model, threads=args.threads, memory_limit=args.memory_limit,
                       allow_engine_mismatch=args.ignore_engine_mismatch, kernel=args.kernel,
                       device=args.device)
    t0 = time.perf_counter()
    try:
        f = io.BytesIO(sys.stdin.buffer.read()) if path == "-" else open(path, "rb")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    with f:
        info = dec.open_index(f)
        total = info.footer.original_len
        if length is None:
            length = max(total - start, 0)
        from ..codec import container as ct
        need = ct.chunks_for_range(info, start, min(length, max(total - start, 0)))
        bar = Progress(sum(c.raw_len for c in need), os.path.basename(path), args.quiet)
        try:
            data = dec.decompress_range(f, start, length, progress=bar)
        finally:
            bar.close()
    dt = time.perf_counter() - t0
    _say(args, f"{path}: bytes {start}..{start + len(data) - 1} of {total}: {len(data)} "
               f"bytes, {dec.chunks_decoded} of {len(info.chunks)} chunks decoded "
               f"in {dt:.1f} s")
    if not test:
        _write_output(out, data, args, path, binary=False)


def _peek_header(path: str) -> dict:
    """The archive's header (an empty dict for stdin or a file that is not an archive:
    the usual path then reports the problem)."""
    from ..codec import container as ct
    from ..errors import ArchiveError
    if path == "-":
        return {}
    try:
        with open(path, "rb") as f:
            return ct.ArchiveReader(f).read_header()
    except (OSError, ArchiveError):
        return {}


def do_extract_tree(args, path: str, out: str | None, test: bool, header: dict) -> None:
    import contextlib
    from ..codec import tree
    from ..codec.decompressor import Decompressor
    name = getattr(args, "file", None)
    if name and "tree" not in header:
        raise UsageError(f"{path} is not a directory archive; --file works on archives of "
                         "a folder")
    dec = Decompressor(args.model, threads=args.threads, memory_limit=args.memory_limit,
                       allow_engine_mismatch=args.ignore_engine_mismatch, kernel=args.kernel,
                       device=args.device)
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        if name:
            data = tree.extract_file_with(dec, f, name)
            f.seek(0)
            n_chunks = len(dec.open_index(f).chunks)
            _say(args, f"{path}: {name}: {len(data)} bytes, {dec.chunks_decoded} of "
                       f"{n_chunks} chunks decoded")
            if not test:
                _write_output(out or os.path.basename(name), data, args, None, binary=False)
            return
        if test:
            entries = tree.extract_with(dec, f, None)
            _say(args, f"{path}: OK ({len(entries)} entries)")
            return
        if out is None:
            if args.stdout:
                raise UsageError("a directory archive extracts to a folder, not to stdout "
                                 "(-c works with --file NAME)")
            if not path.endswith(SUFFIX):
                raise UsageError(f"{path}: unknown suffix (expected {SUFFIX}); use -o FOLDER")
            out = path[:-len(SUFFIX)]
        if out == "-":
            raise UsageError("a directory archive extracts to a folder; use -o FOLDER")
        if getattr(args, "cluster", None):
            from ..tools import cluster as cl
            info = dec.open_index(f)
            entries = tree.read_index(dec, f, info)
            with contextlib.ExitStack() as stack:
                w = stack.enter_context(tree.TreeWriter(
                    entries, info.header["tree"]["index_len"], out))
                c = stack.enter_context(cl.Cluster(args.cluster, args.workers))
                f.seek(0)
                cl.decompress_to(c, f, w, args.model, workers=args.workers,
                                 threads=args.threads, memory_limit=args.memory_limit,
                                 allow_engine_mismatch=args.ignore_engine_mismatch,
                                 kernel=args.kernel, device=args.device)
                w.finish()
        else:
            info = dec.open_index(f)
            bar = Progress(info.footer.original_len, os.path.basename(path), args.quiet)
            try:
                f.seek(0)
                entries = tree.extract_with(dec, f, out, progress=bar)
            finally:
                bar.close()
    files = sum(1 for e in entries if e["type"] == "file")
    _say(args, f"{path}: {len(entries)} entries ({files} files) -> {out}/ in "
               f"{time.perf_counter() - t0:.1f} s")


def do_list(args) -> None:
    import stat as st_
    from ..codec import container as ct
    from ..codec import tree
    with open(args.input, "rb") as f:
        header = ct.ArchiveReader(f).read_header()
        f.seek(0)
        if "tree" not in header:
            info = ct.scan(f, ct.file_length(f))
            rows = [{"path": os.path.basename(args.input).removesuffix(SUFFIX),
                     "type": "file", "size": info.footer.original_len}]
        else:
            rows = tree.list_archive(f)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for e in rows:
        kind = {"dir": st_.S_IFDIR, "link": st_.S_IFLNK}.get(e["type"], st_.S_IFREG)
        mode = st_.filemode(kind | e.get("mode", 0o644)) if "mode" in e else "-" * 10
        when = (time.strftime("%Y-%m-%d %H:%M", time.localtime(e["mtime_ns"] / 1e9))
                if "mtime_ns" in e else " " * 16)
        name = e["path"] + (f" -> {e['target']}" if e["type"] == "link" else
                            "/" if e["type"] == "dir" else "")
        print(f"{mode} {e.get('size', 0):>12} {when} {name}")


def _check_cluster_args(args) -> None:
    if getattr(args, "workers", None) is not None:
        if not getattr(args, "cluster", None):
            raise UsageError("--workers goes with --cluster auto|HOST:PORT")
        if args.workers < 1:
            raise UsageError("--workers must be at least 1")
