"""Per-token surprise view: which tokens of a file cost the model how many bits.

``llmzip show FILE --model M -o page.html`` writes one self-contained HTML page (inline
CSS, JS and SVG; nothing is fetched) where every token is coloured by -log2 p(token)
under the model, with the token, its bits and the model's top alternatives in a tooltip
(mouse hover or keyboard focus: Tab into the text, then arrow keys), a histogram of bits
per token, and the file's totals next to xz -9e and zstd -19. The same numbers go to a
JSON file next to the page (``page.json`` for ``page.html``).

Scoring is the one `llmzip eval` (engine/score.token_bits with stride=None) does and
`llmzip compress` codes with: the text is tokenized as compress does, cut into chunks of
``context - 1`` tokens, each scored after a BOS with one full-sequence forward.

The result of `surprise` (and the JSON file) is a dict of plain values::

    format        "llmzip-surprise/1"
    name          input name (for the title)
    model         model.describe(): name, fingerprint, file, arch, vocab, params
    context, dtype, top_k, max_tokens
    bytes         bytes covered by the scored tokens (a prefix of the input if capped)
    input_bytes   the whole input's length
    tokens        tokens scored
    truncated     true if the input was capped at max_tokens
    bits_total, bits_per_byte, bits_per_token
    baselines     {"xz-9e": {"label", "bytes", "bits_per_byte"}, "zstd-19": {...}}, on
                  the same covered bytes
    escape_id     the tokenizer's escape token (-1 if none): it covers no bytes itself;
                  the byte token after it stands for its byte XOR 0x40
    ids           token ids, one per token
    pieces_hex    the bytes of the input each token covers, hex ("" for escape tokens);
                  their concatenation is the covered input
    bits          -log2 p(token) under the model
    rank          1 + the number of tokens the model gave a higher logit
    top           per token, the top_k alternatives as [id, probability], best first
    vocab_hex     {id: hex of the token's bytes} for every id in ids and top
    seconds       scoring time
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

# re-exported: the page's building blocks live in show_html.py
from .show_html import (COLOURS, TOP_K, _fmt_bpb, byte_segments, level,  # noqa: F401
                        render_html)

FORMAT = "llmzip-surprise/1"
DEFAULT_MAX_TOKENS = 20000
DEFAULT_CONTEXT = 2048



# ------------------------------------------------------------------------------ scoring

def _token_pieces(tok, ids) -> list[bytes]:
    """The input bytes each token covers (b"" for an escape token), concatenating to
    tok.decode(ids)."""
    esc = getattr(tok, "esc_id", -1)
    cache: dict[int, bytes] = {}
    out = []
    after_esc = False
    for i in ids:
        i = int(i)
        if i == esc:
            out.append(b"")
            after_esc = True
            continue
        if i not in cache:
            cache[i] = tok.decode([i])
        piece = cache[i]
        if after_esc:
            piece = bytes([piece[0] ^ 0x40])
            after_esc = False
        out.append(piece)
    return out


def _vocab_bytes(tok, i: int) -> bytes:
    """A token's own bytes (also for the escape token and special tokens)."""
    table = getattr(tok, "_id_bytes", None)
    if table is not None and 0 <= i < len(table):
        return table[i]
    try:
        return tok.decode([i])
    except Exception:
        return tok.tokens[i].encode("utf-8", errors="replace")


def _baselines(data: bytes) -> dict:
    """xz -9e and zstd -19 on `data`, as llmzip.baselines runs them."""
    import lzma
    out = {}
    xz = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                       preset=9 | lzma.PRESET_EXTREME)
    out["xz-9e"] = {"label": "xz -9e", "bytes": len(xz),
                    "bits_per_byte": 8 * len(xz) / len(data) if data else None}
    try:
        import zstandard
        z = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(data)
        out["zstd-19"] = {"label": "zstd -19", "bytes": len(z),
                          "bits_per_byte": 8 * len(z) / len(data) if data else None}
    except ImportError:
        out["zstd-19"] = {"label": "zstd -19", "bytes": None, "bits_per_byte": None,
                          "error": "the zstandard package is not installed"}
    return out


def _encode_capped(tok, data: bytes, max_tokens: int | None):
    """(ids, truncated): the tokens of data, at most max_tokens of them. Very long inputs
    are tokenized only as far as needed (a generous byte prefix)."""
    if max_tokens is None or max_tokens <= 0:
        return tok.encode(data), False
    budget = max_tokens * 64 + 4096
    cut = len(data) > budget
    ids = tok.encode(data[:budget] if cut else data)
    if len(ids) > max_tokens:
        ids = ids[:max_tokens]
        esc = getattr(tok, "esc_id", -1)
        if len(ids) and int(ids[-1]) == esc:        # never end on a dangling escape
            ids = ids[:-1]
        return ids, True
    return ids, cut


def surprise(model, data: bytes, context: int = DEFAULT_CONTEXT, top_k: int = TOP_K,
             max_tokens: int | None = DEFAULT_MAX_TOKENS, threads: int | None = None,
             dtype: str = "auto", name: str = "", progress=None) -> dict:
    """Per-token bits and the model's top_k alternatives for `data` (see the module doc
    for the result). `progress(n)` is called with the number of tokens scored so far."""
    import torch

    from ..codec.tokenizer import tokenizer_for
    from ..engine.float_engine import DTYPES, resolve_dtype, torch_threads
    if threads is None:
        from ..codec.api import default_threads
        threads = default_threads()
    t0 = time.perf_counter()
    tok = tokenizer_for(model)
    context = max(2, min(int(context), model.config.context_length))
    ids, truncated = _encode_capped(tok, data, max_tokens)
    ids = np.asarray(ids, dtype=np.int64)
    pieces = _token_pieces(tok, ids)
    covered = b"".join(pieces)
    if covered != data[:len(covered)]:          # cannot happen with an exact tokenizer
        raise AssertionError("token pieces do not reproduce the input")
    n_tok = len(ids)
    vocab = model.config.vocab_size
    k = max(1, min(int(top_k), vocab))
    bits = np.zeros(n_tok, dtype=np.float64)
    rank = np.zeros(n_tok, dtype=np.int64)
    top_ids = np.zeros((n_tok, k), dtype=np.int64)
    top_p = np.zeros((n_tok, k), dtype=np.float64)
    width = context - 1
    if n_tok:
        gpt = model.gpt(DTYPES[resolve_dtype(dtype)])
        with torch_threads(threads), torch.inference_mode():
            for start in range(0, n_tok, width):
                end = min(start + width, n_tok)
                x = torch.empty((1, end - start + 1), dtype=torch.long)
                x[0, 0] = model.bos_id
                x[0, 1:] = torch.from_numpy(ids[start:end])
                logits = gpt(x[:, :-1])[0]                          # (L, V) float32
                # as score.token_bits: logit(target) - logsumexp(logits), float64
                lse = torch.logsumexp(logits, dim=-1).double()       # (L,)
                tl = logits.gather(-1, x[0, 1:, None])               # (L, 1) float32
                lp = tl[:, 0].double() - lse
                bits[start:end] = -lp.numpy() / math.log(2)
                rank[start:end] = ((logits > tl).sum(-1) + 1).numpy()
                v, i = torch.topk(logits, k, dim=-1)
                top_ids[start:end] = i.numpy()
                top_p[start:end] = torch.exp(v.double() - lse[:, None]).numpy()
                if progress is not None:
                    progress(end)
    seconds = time.perf_counter() - t0
    used = sorted(set(ids.tolist()) | set(top_ids.ravel().tolist()))
    total = float(bits.sum())
    nb = len(covered)
    return {
        "format": FORMAT,
        "name": name,
        "model": model.describe() if hasattr(model, "describe") else {"name": model.name},
        "context": context, "dtype": resolve_dtype(dtype), "top_k": k, "max_tokens": max_tokens,
        "bytes": nb, "input_bytes": len(data), "tokens": n_tok, "truncated": bool(truncated),
        "bits_total": total,
        "bits_per_byte": total / nb if nb else None,
        "bits_per_token": total / n_tok if n_tok else None,
        "baselines": _baselines(covered),
        "escape_id": int(getattr(tok, "esc_id", -1)),
        "ids": ids.tolist(),
        "pieces_hex": [p.hex() for p in pieces],
        "bits": [round(float(b), 6) for b in bits],
        "rank": rank.tolist(),
        "top": [[[int(a), float(f"{p:.6g}")] for a, p in zip(ti, tp)]
                for ti, tp in zip(top_ids.tolist(), top_p.tolist())],
        "vocab_hex": {str(i): _vocab_bytes(tok, i).hex() for i in used},
        "seconds": round(seconds, 3),
    }


# ---------------------------------------------------------------------------- rendering

def json_path(path: str) -> str:
    """page.json for page.html (or page.html.json for a name without .html/.htm)."""
    root, ext = os.path.splitext(path)
    return (root if ext.lower() in (".html", ".htm") else path) + ".json"


def _atomic_write(path: str, data: bytes) -> None:
    import tempfile
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)               # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_page(path: str, result: dict) -> tuple[str, str]:
    """Write the HTML page at `path` and the JSON data next to it; both paths back."""
    jpath = json_path(path)
    _atomic_write(jpath, (json.dumps(result, separators=(",", ":")) + "\n").encode())
    _atomic_write(path, render_html(result).encode("utf-8"))
    return path, jpath


# ---------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="file to look at ('-' for stdin)")
    p.add_argument("--model", help="model name (default smollm2-135m) or GGUF file path")
    p.add_argument("-o", "--output", help="HTML page to write (default INPUT.html); the "
                   "JSON data goes next to it (page.json)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"score at most this many tokens (default {DEFAULT_MAX_TOKENS}; "
                   "0: no cap)")
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT,
                   help="tokens per scored chunk incl. BOS (default 2048, or the model's "
                   "context if shorter)")
    p.add_argument("--threads", type=int,
                   help="torch threads (default $LLMZIP_THREADS, else up to 2)")


def run_cli(args) -> int:
    """`llmzip show FILE [--model M] [-o page.html]`."""
    from ..codec.tokenizer import tokenizer_for
    from ..engine.models.registry import load_model
    from ..errors import UsageError
    path = args.input
    out = getattr(args, "output", None)
    if out is None:
        if path == "-":
            raise UsageError("show: reading stdin needs -o PAGE.html")
        out = path + ".html"
    max_tokens = getattr(args, "max_tokens", DEFAULT_MAX_TOKENS)
    if max_tokens is not None and max_tokens < 0:
        raise UsageError("--max-tokens must be >= 0 (0: no cap)")
    context = getattr(args, "context", None) or DEFAULT_CONTEXT
    if context < 2:
        raise UsageError("--context must be at least 2")
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from None
    from ..codec.container import MAGIC
    if data.startswith(MAGIC):                  # its bytes are not the text it holds
        what = "the input on stdin" if path == "-" else path
        raise UsageError(f"{what} is an llmzip archive: `llmzip info {path}` describes it; "
                         f"`llmzip show` reads a text (decompress it first)")
    model = load_model(getattr(args, "model", None))
    tokenizer_for(model)                        # built here, outside the timed scoring
    name = "stdin" if path == "-" else os.path.basename(path)
    res = surprise(model, data, context=context, max_tokens=max_tokens or None,
                   threads=getattr(args, "threads", None), name=name)
    page, jpath = write_page(out, res)
    if not getattr(args, "quiet", False):
        cap = " (capped at --max-tokens)" if res["truncated"] else ""
        bpb = res["bits_per_byte"]
        print(f"{name}: {res['tokens']} tokens, {res['bytes']} bytes{cap}, ideal "
              f"{bpb if bpb is not None else 0:.3f} bits/byte (xz -9e "
              f"{_fmt_bpb(res['baselines']['xz-9e']['bits_per_byte'])}, zstd -19 "
              f"{_fmt_bpb(res['baselines']['zstd-19']['bits_per_byte'])}) -> {page}, {jpath}",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m llmzip.tools.show FILE ...` (the same as `llmzip show FILE ...`)."""
    from ..errors import LlmzipError
    p = argparse.ArgumentParser(prog="llmzip show",
                                description="Per-token surprise page (HTML + JSON).")
    add_arguments(p)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_cli(args)
    except LlmzipError as e:
        print(f"llmzip: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
