"""What the command line's subcommands share: reading input, writing output atomically,
messages, the subcommand list."""

from __future__ import annotations

import os
import sys

from ..errors import UsageError


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


def compressor_settings(args) -> dict:
    """Compressor keyword arguments from the command line (model not included)."""
    adapt = getattr(args, "adapt", None)
    if adapt is not None:
        from ..codec.adapt import AdaptConfig
        adapt = AdaptConfig.parse(adapt).to_dict()
    return dict(dtype=args.dtype, threads=args.threads, seg_len=args.seg_len,
                batch=args.batch, memory_limit=args.memory_limit,
                fallback=not args.no_fallback, attention=args.attention, engine=args.engine,
                kernel=args.kernel, device=args.device, level=getattr(args, "level", None),
                window=getattr(args, "window", None), stride=getattr(args, "stride", None),
                adapt=adapt, slide=getattr(args, "slide", None))


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def _write_output(path: str | None, data: bytes, args, src: str | None, binary: bool) -> None:
    from ..files import AtomicOutput
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


class _Sink:
    """An output that only counts (decode checks with -t and --verify)."""

    def __init__(self):
        self.n = 0

    def write(self, b) -> None:
        self.n += len(b)


def _target(args, out: str, src: str | None, binary: bool):
    """(file object, AtomicOutput or None) for streamed output."""
    from ..files import AtomicOutput
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


def decompressed_name(args, path: str) -> str:
    """Where `llmzip -d PATH` writes without -o: stdout for '-' or -c, else PATH less .llmz."""
    if path == "-" or args.stdout:
        return "-"
    if path.endswith(SUFFIX):
        return path[:-len(SUFFIX)]
    raise UsageError(f"{path}: unknown suffix (expected {SUFFIX}); use -o or -c")
