"""Command line: gzip/xz/zstd conventions plus llmzip's own subcommands.

    llmzip FILE... [-d] [-c] [-t] [-k] [-f] [-q] [-v]      gzip-style
    llmzip COMMAND ...      compress, decompress, info, list, bench, eval, show, models, scale

Exit codes: 0 ok, 1 error, 2 corrupt or unusable archive, 130 interrupted, 143 terminated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import ArchiveError, LlmzipError, UsageError
from .progress import Progress

SUFFIX = ".llmz"
# the subcommands and their one-line help, for `llmzip COMMAND -h` and `llmzip --help`
COMMANDS = {
    "compress": "compress a file",
    "decompress": "decompress an archive",
    "info": "describe an archive",
    "list": "list the files of a directory archive",
    "bench": "every codec on every file, round trips verified; tables and plot",
    "eval": "ideal bits per byte of models on files (no coding)",
    "show": "HTML page of the bits each token costs (+ JSON)",
    "models": "list the models llmzip can find; register a GGUF",
    "scale": "online-mode scaling study: model x data size, fitted law, plots",
}
SUBCOMMANDS = tuple(COMMANDS)


def _size(text: str) -> int:
    """Byte counts like 8G, 512M, 64k, 100 (binary units)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (default smollm2-135m; `llmzip models` lists "
                   "them), a GGUF file path, or 'auto' (the best on a sample of the input)")
    p.add_argument("--threads", type=int,
                   help="threads (default: the exact engine follows the machine's load, "
                   "results do not depend on it; float engine: $LLMZIP_THREADS, else up "
                   "to 2, and decoding uses the archive's)")
    # the names of exact.KERNELS, written out so that the CLI starts without torch
    # (tests/test_cli.py checks the two agree)
    p.add_argument("--engine", choices=["exact", "float"], default="exact",
                   help="exact (default): integer arithmetic, archives decode on any "
                   "machine; float: llmzip 0.1's engine, archives decode only on a machine "
                   "like the one that wrote them (decoding reads the archive's engine)")
    p.add_argument("--kernel", default="auto",
                   choices=["auto", "reference", "portable", "avx2", "avx512bw", "avx512vnni",
                            "avxvnni"],
                   help="exact engine: force a kernel path (all give the same integers; "
                   "auto: the widest this CPU has; reference: plain torch, slow)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (cuda is refused until it has been tested; docs/engine.md)")
    p.add_argument("--batch", type=int, default=64, help="most segments coded in lockstep")
    p.add_argument("--seg-len", type=int, help="most tokens per segment (default 2048, or "
                   "the model's context if shorter)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="float engine: model arithmetic, recorded in the archive (auto: "
                   "bfloat16 where the CPU has native bf16, else float32)")
    # the names of engine.ATTENTIONS, written out so that the CLI starts without torch
    # (tests/test_cli.py checks the two agree)
    p.add_argument("--attention", choices=["auto", "bf16-kernel", "torch-f32"],
                   default="auto", help="float engine: KV cache and attention, recorded in the archive "
                   "(auto: llmzip's bf16 kernel where a C compiler can build it, else "
                   "torch's float32 bmm)")
    p.add_argument("--memory-limit", type=_size, default=8 << 30,
                   help="most bytes decoding may allocate for the KV cache (e.g. 16G)")
    p.add_argument("--ignore-engine-mismatch", action="store_true",
                   help="float-engine archives: decode even if torch/CPU differ from the "
                   "archive's (still verified)")
    p.add_argument("--no-fallback", action="store_true",
                   help="keep model-coded chunks even where zstd or xz (on the chunk or "
                   "over the whole input) would be smaller (for measurements)")
    p.add_argument("--verify", action="store_true",
                   help="after compressing, decode the archive and compare before writing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail")


def _io(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="output file ('-' for stdout)")
    p.add_argument("-c", "--stdout", action="store_true", help="write to standard output")
    p.add_argument("-f", "--force", action="store_true",
                   help="overwrite existing output; allow compressed data to a terminal")
    p.add_argument("-k", "--keep", action="store_true", help="keep the input (the default)")
    p.add_argument("--rm", action="store_true", help="remove the input after success")


def _cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="auto|ADDRESS", help="run on Ray (pip install "
                   "'llmzip[ray]'): 'auto' starts a local cluster with a worker per core, "
                   "HOST:PORT joins one started with `ray start --head`; the archive is the "
                   "same bytes as without (docs/cluster.md)")
    p.add_argument("--workers", type=int, help="--cluster: workers (each loads the model "
                   "once; default: the cluster's CPUs)")


def _mode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["prior", "online"], default="prior",
                   help="prior: a pretrained model (default); online: a GPT trained on the "
                   "data while it is coded (no weights needed to decode)")
    p.add_argument("--preset", default="s", help="online mode: model size preset")
    p.add_argument("--config", help="online mode: JSON file with the model/optimizer config")
    p.add_argument("--seed", type=int, default=0, help="online mode: initialisation seed")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmzip", description="Lossless compression with a GPT.")
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("compress", help=COMMANDS["compress"])
    c.add_argument("input", help="file or folder to compress ('-' for stdin); a folder "
                   "becomes one directory archive (names, modes, mtimes, links)")
    _io(c)
    _common(c)
    _mode(c)
    _cluster(c)
    d = sub.add_parser("decompress", help=COMMANDS["decompress"])
    d.add_argument("input", help="archive ('-' for stdin)")
    d.add_argument("-t", "--test", action="store_true", help="check only, write nothing")
    d.add_argument("--file", metavar="NAME", help="directory archive: extract only this "
                   "file (decoding only its chunks), to -o, -c or its base name here")
    d.add_argument("--range", metavar="START:LEN", help="decode only original bytes START "
                   "to START+LEN-1 (LEN empty: to the end; units like 64k), decoding only "
                   "the chunks that hold them; needs -o or -c")
    _io(d)
    _common(d)
    _cluster(d)
    ls = sub.add_parser("list", help=COMMANDS["list"])
    ls.add_argument("input")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    i = sub.add_parser("info", help=COMMANDS["info"])
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("-v", "--verbose", action="store_true", help="list every chunk")
    b = sub.add_parser("bench", help=COMMANDS["bench"])
    b.add_argument("input", nargs="+")
    b.add_argument("--json", help="also write result rows to this JSONL file")
    b.add_argument("--out", help="result directory (default ./bench-results)")
    b.add_argument("--codecs", help="comma-separated codec names (default: all classical + "
                   "llmzip)")
    b.add_argument("--no-resume", action="store_true", help="recompute finished cells")
    b.add_argument("--report", action="store_true", help="run nothing: table, CSV, Markdown "
                   "and plot from every cell already recorded for these files in --out")
    _common(b)
    e = sub.add_parser("eval", help=COMMANDS["eval"])
    e.add_argument("input", nargs="+", help="files or folders")
    e.add_argument("--model", action="append", help="model name or GGUF path (repeatable)")
    e.add_argument("--context", type=int, default=2048, help="tokens per window, BOS included")
    e.add_argument("--stride", type=int, help="sliding-window stride (default: independent "
                   "chunks, as compress segments)")
    e.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--json", help="append one JSON row per (model, file) to this file")
    _cluster(e)
    mo = sub.add_parser("models", help=COMMANDS["models"])
    mo.add_argument("action", nargs="?", choices=["list", "add", "remove"], default="list")
    mo.add_argument("name", nargs="?", help="add/remove: the model's name")
    mo.add_argument("path", nargs="?", help="add: the GGUF file")
    mo.add_argument("--json", action="store_true")
    from .tools.show import add_arguments as add_show_arguments
    add_show_arguments(sub.add_parser("show", help=COMMANDS["show"]))
    from .tools.scale import add_arguments as add_scale_arguments
    add_scale_arguments(sub.add_parser("scale", help=COMMANDS["scale"]))
    return p


def build_short_parser() -> argparse.ArgumentParser:
    """The gzip-style parser (`llmzip FILE...`); its --help lists the subcommands too."""
    width = max(map(len, COMMANDS)) + 2
    commands = "\n".join(f"  {name:{width}s}{text}" for name, text in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="llmzip", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="llmzip [options] [FILE ...]\n       llmzip COMMAND [-h] ...",
        description="Lossless compression with a GPT.\n\n"
        "gzip-style: llmzip FILE writes FILE.llmz; -d decompresses, -t tests, -c writes\n"
        "to stdout (options below). Commands (llmzip COMMAND -h for their options):\n\n"
        f"{commands}")
    p.add_argument("files", nargs="*", default=["-"], metavar="FILE",
                   help="files to compress or, with -d/-t, archives ('-' or none: stdin)")
    p.add_argument("-d", "--decompress", action="store_true", help="decompress")
    p.add_argument("-t", "--test", action="store_true",
                   help="decode and verify archives, write nothing")
    _io(p)
    _common(p)
    _mode(p)
    _cluster(p)
    return p


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def _write_output(path: str | None, data: bytes, args, src: str | None, binary: bool) -> None:
    from .files import AtomicOutput
    if path is None or path == "-":
        out = sys.stdout.buffer
        if binary and not args.force and sys.stdout.isatty():
            raise UsageError("refusing to write compressed data to a terminal; use -o or -f")
        out.write(data)
        out.flush()
        return
    if src is not None and os.path.exists(path) and os.path.samefile(src, path):
        raise UsageError(f"output {path} is the input file")
    with AtomicOutput(path, overwrite=args.force,
                      copy_stat_from=src if src not in (None, "-") else None) as o:
        o.write(data)
        o.commit()


def _say(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def _compress_online(args, data: bytes, bar):
    from .codec import online
    t0 = time.perf_counter()
    blob = online.compress_online(data, preset=args.preset, config=args.config,
                                  seed=args.seed, threads=args.threads, progress=bar)
    acc = online.online_accounting(blob)
    from .codec.api import Stats
    st = Stats(input_bytes=len(data), output_bytes=len(blob), model_bytes=acc["online_bytes"],
               ideal_bits=acc["ideal_bits"], seconds=time.perf_counter() - t0)
    return blob, st


class _Sink:
    """An output that only counts (decode checks with -t and --verify)."""

    def __init__(self):
        self.n = 0

    def write(self, b) -> None:
        self.n += len(b)


def _target(args, out: str, src: str | None, binary: bool):
    """(file object, AtomicOutput or None) for streamed output."""
    from .files import AtomicOutput
    if out == "-":
        if binary and not args.force and sys.stdout.isatty():
            raise UsageError("refusing to write compressed data to a terminal; use -o or -f")
        return sys.stdout.buffer, None
    if src not in (None, "-") and os.path.exists(out) and os.path.samefile(src, out):
        raise UsageError(f"output {out} is the input file")
    o = AtomicOutput(out, overwrite=args.force,
                     copy_stat_from=src if src not in (None, "-") else None)
    return o, o


def _map_input(path: str, stack):
    """The input as bytes or a read-only mmap (not read into memory)."""
    import mmap
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        f = stack.enter_context(open(path, "rb"))
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def _say_pool(args, ps) -> None:
    if getattr(args, "verbose", False):
        load = max(ps.setup_seconds) if ps.setup_seconds else 0.0
        _say(args, f"cluster: {ps.workers} workers (model load up to {load:.1f} s), "
                   f"{ps.chunks} chunks, {ps.retries} handed out again after a worker died, "
                   f"{ps.task_bytes} bytes sent, {ps.result_bytes} bytes back")


def do_compress_cluster(args, path: str, out: str | None) -> None:
    import contextlib
    from .tools import cluster as cl
    if getattr(args, "mode", "prior") == "online":
        raise UsageError("--cluster: online mode trains one model over the whole input "
                         "and cannot be split; drop --cluster or --mode online")
    job = None
    if path != "-" and os.path.isdir(path):
        from .codec import tree
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
                dtype=args.dtype, threads=args.threads, seg_len=args.seg_len,
                batch=args.batch, memory_limit=args.memory_limit,
                fallback=not args.no_fallback, attention=args.attention,
                engine=args.engine, kernel=args.kernel, device=args.device, tree=job)
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
    from .tools import cluster as cl
    if out is None and not test:
        if path == "-" or args.stdout:
            out = "-"
        elif path.endswith(SUFFIX):
            out = path[:-len(SUFFIX)]
        else:
            raise UsageError(f"{path}: unknown suffix (expected {SUFFIX}); use -o or -c")
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
    from .codec.api import Compressor
    from .codec import tree
    out = _tree_output(args, path, out)
    job = tree.TreeJob(path)
    comp = Compressor(args.model, dtype=args.dtype, threads=args.threads,
                      seg_len=args.seg_len, batch=args.batch, memory_limit=args.memory_limit,
                      fallback=not args.no_fallback, attention=args.attention,
                      engine=args.engine, kernel=args.kernel, device=args.device)
    bar = Progress(job.original_len, os.path.basename(path.rstrip("/")), args.quiet)
    try:
        blob = comp.compress_tree(path, progress=bar, job=job)
    finally:
        bar.close()
    if getattr(args, "verify", False):
        from .codec.api import Decompressor
        tree.extract_with(Decompressor(comp.model, threads=args.threads,
                                       memory_limit=args.memory_limit, kernel=args.kernel,
                                       device=args.device), blob, None)
    _write_output(out, blob, args, None, binary=True)
    st = comp.stats
    _say(args, f"{path}: {len(job.files)} files, {job.original_len} bytes (index "
               f"{len(job.index)}) -> {len(blob)} bytes, {st.bpb:.4f} bits/byte in "
               f"{st.seconds:.1f} s")


def do_compress(args, path: str, out: str | None) -> None:
    from .codec.api import Compressor
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
            comp = Compressor(args.model, dtype=args.dtype, threads=args.threads,
                              seg_len=args.seg_len, batch=args.batch,
                              memory_limit=args.memory_limit,
                              fallback=not args.no_fallback, attention=args.attention,
                              engine=args.engine, kernel=args.kernel, device=args.device)
            blob = comp.compress(data, progress=bar)
            st = comp.stats
    finally:
        bar.close()
    if getattr(args, "verify", False):
        from .codec.api import Decompressor
        from .errors import ChecksumError
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
    from .codec.api import Decompressor
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
        from .codec import container as ct
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
    from .codec import container as ct
    from .errors import ArchiveError
    if path == "-":
        return {}
    try:
        with open(path, "rb") as f:
            return ct.ArchiveReader(f).read_header()
    except (OSError, ArchiveError):
        return {}


def do_extract_tree(args, path: str, out: str | None, test: bool, header: dict) -> None:
    import contextlib
    from .codec import tree
    from .codec.api import Decompressor
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
            from .tools import cluster as cl
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
    from .codec import container as ct
    from .codec import tree
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


def do_decompress(args, path: str, out: str | None, test: bool) -> None:
    from .codec.api import Decompressor
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
    from .codec import container as ct
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
        if path == "-" or args.stdout:
            out = "-"
        elif path.endswith(SUFFIX):
            out = path[:-len(SUFFIX)]
        else:
            raise UsageError(f"{path}: unknown suffix (expected {SUFFIX}); use -o or -c")
    _write_output(out, data, args, path, binary=False)
    _say(args, f"{path}: {len(blob)} -> {len(data)} bytes in {dt:.1f} s "
               f"({len(data) / dt if dt else 0:,.0f} B/s)")
    if args.rm and path != "-" and out != "-":
        os.unlink(path)


def do_info(args) -> None:
    from .codec import container as ct
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
        from .codec.online import online_accounting
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
    from .engine.models import catalog
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


def _check_cluster_args(args) -> None:
    if getattr(args, "workers", None) is not None:
        if not getattr(args, "cluster", None):
            raise UsageError("--workers goes with --cluster auto|HOST:PORT")
        if args.workers < 1:
            raise UsageError("--workers must be at least 1")


def _run(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        args = build_parser().parse_args(argv)
        _check_cluster_args(args)
        if args.cmd == "compress":
            out = "-" if args.stdout else args.output
            do_compress(args, args.input, out)
        elif args.cmd == "decompress":
            out = "-" if args.stdout else args.output
            do_decompress(args, args.input, out, args.test)
        elif args.cmd == "info":
            do_info(args)
        elif args.cmd == "list":
            do_list(args)
        elif args.cmd == "bench":
            from .tools.bench import run_cli
            run_cli(args)
        elif args.cmd == "models":
            do_models(args)
        elif args.cmd == "show":
            from .tools.show import run_cli as run_show
            run_show(args)
        elif args.cmd == "eval":
            from .tools.evaluate import run_cli as run_eval
            run_eval(args)
        elif args.cmd == "scale":
            from .tools.scale import run_cli as run_scale
            run_scale(args)
        return 0
    args = build_short_parser().parse_args(argv)
    _check_cluster_args(args)
    if args.output and len(args.files) > 1:
        raise UsageError("-o takes a single input file")
    status = 0
    for path in args.files:
        out = "-" if args.stdout else args.output
        try:
            if args.decompress or args.test:
                do_decompress(args, path, out, args.test)
            else:
                do_compress(args, path, out)
        except ArchiveError as e:      # keep going with the other files, like gzip
            print(f"llmzip: {path}: {e}", file=sys.stderr)
            status = 2
        except LlmzipError as e:
            print(f"llmzip: {path}: {e}", file=sys.stderr)
            status = max(status, 1)
    return status


class Terminated(BaseException):
    """SIGTERM, turned into an exception so temporary files are cleaned up."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(argv)
    except ArchiveError as e:
        print(f"llmzip: {e}", file=sys.stderr)
        return 2
    except LlmzipError as e:
        print(f"llmzip: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmzip: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("llmzip: terminated", file=sys.stderr)
        return 143
    except OSError as e:         # disk full, permissions, ...: the output was not committed
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"llmzip: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except MemoryError:
        print("llmzip: out of memory (try a smaller --batch)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
