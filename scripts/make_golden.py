#!/usr/bin/env python
"""Write the golden archives in tests/golden/ (run from the repository root).

Good archives must keep decoding to their originals in every later version; bad ones
must each fail for their own named reason. tests/test_golden.py checks both. Re-run only
when the format version changes (and bump container.VERSION then).

`--only NAME ...` writes just those good archives (one added within a format version)
and their manifest entries. `--real` writes tests/golden/real/ instead: archives of the first 1,500 bytes of
alice29.txt made with the real default models (SmolLM2, Gemma 3) by the exact engine.

Archives of earlier format versions live in tests/golden/v<N>/ (made by this script as it
was at that version; see git history). They are never rewritten: the script lists them
in the manifest under "legacy", and the tests decode them with today's code. Before
re-running for a new version, `git mv` the current good archives into tests/golden/v<old>/
(tree.llmz too: earlier trees are listed under "trees" with their version).
"""

from __future__ import annotations

import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import llmzip  # noqa: E402
from llmzip.codec import container as ct  # noqa: E402
from llmzip.engine.models.registry import load_model  # noqa: E402
from llmzip.engine.models.tiny import write_tiny_gguf  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness. 压缩即理解。 Ünïcödé ✓ \r\n").encode() * 12
BINARY = bytes((i * 7919 + (i >> 3) * 31) & 0xFF for i in range(6000))
MIXED = TEXT * 6 + bytes(range(256)) * 40 + b"\x00" * 500 + TEXT * 6


def _write_good(name: str, data: bytes, kw: dict, model, manifest: dict) -> None:
    """A good archive (the exact engine at the default level unless kw says otherwise),
    checked to round-trip, with its original and its manifest entry."""
    blob = llmzip.compress(data, model=model, **{"batch": 3, "seg_len": 96, **kw})
    assert llmzip.decompress(blob, model=model) == data
    open(os.path.join(OUT, f"{name}.orig"), "wb").write(data)
    open(os.path.join(OUT, f"{name}.llmz"), "wb").write(blob)
    manifest["good"][name] = {"methods": sorted({c.method_name for c in
                                                 ct.scan(blob).chunks})}


def main(only: list[str] | None = None) -> None:
    """Write every golden archive, or with `only` just those (`--only NAME ...`: an
    archive added within a format version, the others left as they were written)."""
    os.makedirs(OUT, exist_ok=True)
    model_path = os.path.join(OUT, "tiny.gguf")
    write_tiny_gguf(model_path, seed=0)
    model = load_model(model_path)
    good = {
        "text": (TEXT, dict(fallback=False)),
        "mixed": (MIXED, dict(fallback=False)),
        "binary": (BINARY, {}),
        "empty": (b"", {}),
        # a window of 64 positions sliding by 16 over segments of 400 tokens (version 7)
        "slide": (TEXT * 3, dict(fallback=False, window=64, stride=16, seg_len=400)),
        # the temperature `tau` (llmzip 0.10, format 9) beside the bias, in a sliding window
        "tau": (TEXT * 3, dict(fallback=False, window=64, stride=16, seg_len=400,
                               adapt={"bias": 14000, "tau": 2000000})),
        # dynamic evaluation (llmzip 0.6): two steps in each of 4 segments of ~760 tokens
        "dyneval": (TEXT * 3, dict(fallback=False, seg_len=800,
                                   adapt={"bias": 14000, "dyneval": 1 << 24})),
    }
    if only:                     # add archives without writing the others again
        with open(os.path.join(OUT, "manifest.json")) as f:
            manifest = json.load(f)
        for name in only:
            _write_good(name, *good[name], model, manifest)
        with open(os.path.join(OUT, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        return
    wrong_model = load_model(write_tiny_gguf(os.path.join(OUT, "tiny-other.gguf"), seed=1))
    manifest = {"good": {}, "bad": {}}
    for name, (data, kw) in good.items():
        _write_good(name, data, kw, model, manifest)

    trees(model, manifest)

    blob = open(os.path.join(OUT, "text.llmz"), "rb").read()
    info = ct.scan(blob)
    first = info.chunks[0]
    rec_start = first.offset - ct._CHUNK.size - 4
    foot_start = info.archive_len - (1 + 44 + 4 + 4)

    def flip(b, i):
        b = bytearray(b)
        b[i] ^= 0x01
        return bytes(b)

    bad = {
        "bad_magic": (b"\x89LLMX" + blob[5:], "FormatError"),
        "unknown_version": (blob[:8] + struct.pack("<H", ct.VERSION + 1) + blob[10:],
                            "UnsupportedVersionError"),
        "header_crc": (flip(blob, 20), "ChecksumError"),
        "chunk_record_crc": (flip(blob, rec_start + 2), "ChecksumError"),
        "chunk_data_crc": (flip(blob, first.offset + 5), "ChecksumError"),
        "truncated_footer": (blob[:-3], "TruncatedError"),
        "truncated_chunk": (blob[:first.offset + 3], "TruncatedError"),
        "trailing_data": (blob + b"\x00", "FormatError"),
        "footer_crc": (flip(blob, foot_start + 5), "ChecksumError"),
    }
    # content checksum: a well-formed archive whose SHA-256 does not match its content
    body = ct.header_bytes(info.header, info.version) + blob[rec_start:foot_start]
    bad["content_sha256"] = (body + ct.footer_bytes(len(info.chunks), info.footer.original_len,
                                                    bytes(32)), "ChecksumError")
    # model mismatch: a real archive made with another model than tiny.gguf
    other = llmzip.compress(TEXT, model=wrong_model, batch=3, seg_len=96, fallback=False)
    bad["model_mismatch"] = (other, "ModelMismatchError")
    # a chunk claiming 4 GiB of output: refused before allocation
    huge = ct._CHUNK.pack(ct.METHOD_ZSTD, 0xFFFFFFFF, 10, 0, 0)
    bad["huge_length"] = (ct.header_bytes({"format": "llmzip", "mode": "prior"}) + huge +
                          struct.pack("<I", ct.crc32(huge)) + bytes(10), "LimitError")
    for name, (data, error) in bad.items():
        open(os.path.join(OUT, f"bad_{name}.llmz"), "wb").write(data)
        manifest["bad"][name] = error
    os.remove(os.path.join(OUT, "tiny-other.gguf"))
    manifest["legacy"] = {}
    for sub in sorted(d for d in os.listdir(OUT) if d.startswith("v") and d[1:].isdigit()):
        for f in sorted(os.listdir(os.path.join(OUT, sub))):
            name = f[:-len(".llmz")]
            if f.endswith(".llmz") and name in good:
                blob = open(os.path.join(OUT, sub, f), "rb").read()
                manifest["legacy"][f"{sub}/{name}"] = {"original": f"{name}.orig",
                                                      "version": ct.scan(blob).version}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {len(good)} good and {len(bad)} bad archives to {os.path.abspath(OUT)}; "
          f"kept {len(manifest['legacy'])} of earlier versions")


def _entry(path, kind, mode, t, **kw):
    return {"path": path, "type": kind, "mode": mode, "mtime_ns": 1_700_000_000_000_000_000 + t,
            **kw}


def trees(model, manifest) -> None:
    """Directory archives (format version 6): a good one (files, folders, links, modes,
    mtimes, an empty file and folder) whose expected listing and file hashes go in the
    manifest, and hostile ones that must be refused before anything is written. Made
    from fixed entries (codec.tree.TreeJob(entries=, contents=)), so they are the same on
    every run and the hostile ones exist at all (walk() refuses to write them)."""
    import hashlib
    from llmzip.codec.tree import TreeJob
    contents = {"README": TEXT[:300], "data/mixed.bin": MIXED[:3000], "data/text.txt": TEXT,
                "data/empty": b"", "run.sh": b"#!/bin/sh\necho llmzip\n"}
    entries = [
        _entry("README", "file", 0o644, 1, size=300),
        _entry("data", "dir", 0o755, 2),
        _entry("data/empty", "file", 0o600, 3, size=0),
        _entry("data/mixed.bin", "file", 0o640, 4, size=3000),
        _entry("data/text.txt", "file", 0o644, 5, size=len(TEXT)),
        _entry("data/up", "link", 0o777, 6, target="../README"),
        _entry("empty-dir", "dir", 0o700, 7),
        _entry("latest", "link", 0o777, 8, target="data/text.txt"),
        _entry("run.sh", "file", 0o755, 9, size=len(contents["run.sh"])),
    ]
    comp = llmzip.Compressor(model, batch=3, seg_len=96, fallback=False)
    blob = comp.compress_tree("", job=TreeJob("", entries=entries, contents=contents))
    open(os.path.join(OUT, "tree.llmz"), "wb").write(blob)
    manifest["trees"] = {"tree": {
        "entries": entries, "version": ct.scan(blob).version,
        "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in contents.items()},
        "methods": sorted({c.method_name for c in ct.scan(blob).chunks})}}
    for sub in sorted(d for d in os.listdir(OUT) if d.startswith("v") and d[1:].isdigit()):
        path = os.path.join(OUT, sub, "tree.llmz")       # the same tree, earlier versions
        if os.path.exists(path):
            old = ct.scan(open(path, "rb").read())
            manifest["trees"][f"{sub}/tree"] = dict(
                manifest["trees"]["tree"], version=old.version,
                methods=sorted({c.method_name for c in old.chunks}))
    hostile = {
        "traversal": [_entry("../escaped", "file", 0o644, 0, size=1)],
        "absolute": [_entry("/tmp/llmzip-golden-escaped", "file", 0o644, 0, size=1)],
        "link_out": [_entry("out", "link", 0o777, 0, target="../../etc")],
        "through_link": [_entry("d", "dir", 0o755, 0),
                         _entry("l", "link", 0o777, 0, target="d"),
                         _entry("l/x", "file", 0o644, 0, size=1)],
    }
    manifest["bad_trees"] = {}
    for name, ents in hostile.items():
        job = TreeJob("", entries=ents, contents={e["path"]: b"!" for e in ents
                                                  if e["type"] == "file"})
        open(os.path.join(OUT, f"bad_tree_{name}.llmz"), "wb").write(
            comp.compress_tree("", job=job))
        manifest["bad_trees"][name] = "FormatError"


REAL_SAMPLE = 1500        # bytes of alice29.txt in each real-model golden archive


def real() -> None:
    """Golden archives made with the real models by the exact engine (tests/golden/real/):
    the slow tests decode them on whatever machine runs them."""
    corpus = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")
    data = open(os.path.join(corpus, "alice29.txt"), "rb").read()[:REAL_SAMPLE]
    out = os.path.join(OUT, "real")
    os.makedirs(out, exist_ok=True)
    for name in ("smollm2-135m", "gemma3-270m"):
        c = llmzip.Compressor(name, fallback=False)
        blob = c.compress(data)
        assert llmzip.decompress(blob) == data
        open(os.path.join(out, f"{name}.llmz"), "wb").write(blob)
        print(f"{name}: {len(data)} -> {len(blob)} bytes (kernel {c.engine.kernel_name})")


if __name__ == "__main__":
    if sys.argv[1:] == ["--real"]:
        real()
    elif sys.argv[1:2] == ["--only"]:
        main(sys.argv[2:])
    else:
        main()
