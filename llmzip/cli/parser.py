"""The command line's parsers: the gzip-style short form and the subcommands."""

from __future__ import annotations

import argparse

from ..codec.levels import describe as describe_levels
from .common import COMMANDS


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
                            "avxvnni", "amx"],
                   help="exact engine: force a kernel path (all give the same integers; "
                   "auto: the widest this CPU has; reference: plain torch, slow)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (cuda is refused until it has been tested; docs/engine.md)")
    for n in range(1, 10):
        p.add_argument(f"-{n}", dest="level", action="store_const", const=n,
                       help=argparse.SUPPRESS)
    p.add_argument("--level", type=int, choices=range(1, 10), metavar="1..9",
                   help="-1 (fast) .. -9 (strongest): model, window, segments and adaptive "
                   "models (default -6; `llmzip --help` lists them)")
    p.add_argument("--batch", type=int, default=64, help="most segments coded in lockstep")
    p.add_argument("--seg-len", type=int, help="most tokens per segment (default: the "
                   "level's; at most the model's context without a sliding window)")
    p.add_argument("--window", type=int, help="exact engine: positions of the sliding "
                   "window, BOS included (0: none, each segment one window; default: the "
                   "level's)")
    p.add_argument("--stride", type=int, help="exact engine: tokens the window moves by")
    p.add_argument("--slide", choices=["shift", "rebuild"], help="exact engine: how the "
                   "window moves: its kept keys and values shift with it (default), or the "
                   "kept context is computed again from BOS (llmzip 0.3.0; slower)")
    p.add_argument("--adapt", help="exact engine: adaptive models as NAME=RATE,... "
                   "(bias, match, ngram, tau, temper (before 0.10), and dyneval: the "
                   "model's last 2 MLPs "
                   "learn the file, rate = learning rate * 2^30, e.g. 322123; 'off' for "
                   "none; default: the level's)")
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
    from ..tools.show import add_arguments as add_show_arguments
    add_show_arguments(sub.add_parser("show", help=COMMANDS["show"]))
    from ..tools.scale import add_arguments as add_scale_arguments
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
        f"{commands}\n\nLevels (compressing; explicit options override them):\n"
        f"{describe_levels()}")
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
