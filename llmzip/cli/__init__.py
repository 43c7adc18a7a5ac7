"""Command line: gzip/xz/zstd conventions plus llmzip's own subcommands.

    parser.py     the parsers (short gzip-style form, subcommands)
    common.py     input, atomic output, messages
    commands.py   compress, decompress, info, models of one file
    corpus.py     directories, --range, --cluster

    llmzip FILE... [-d] [-c] [-t] [-k] [-f] [-q] [-v]      gzip-style
    llmzip COMMAND ...      compress, decompress, info, list, bench, eval, show, models, scale

Exit codes: 0 ok, 1 error, 2 corrupt or unusable archive, 130 interrupted, 143 terminated.
"""

from __future__ import annotations

import sys

from ..errors import ArchiveError, LlmzipError, UsageError
from .commands import do_compress, do_decompress, do_info, do_models
from .common import COMMANDS, SUBCOMMANDS, SUFFIX  # noqa: F401 (re-exported)
from .corpus import _check_cluster_args, do_list
from .parser import _common, build_parser, build_short_parser  # noqa: F401 (re-exported)


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
            from ..tools.bench import run_cli
            run_cli(args)
        elif args.cmd == "models":
            do_models(args)
        elif args.cmd == "show":
            from ..tools.show import run_cli as run_show
            run_show(args)
        elif args.cmd == "eval":
            from ..tools.evaluate import run_cli as run_eval
            run_eval(args)
        elif args.cmd == "scale":
            from ..tools.scale import run_cli as run_scale
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
