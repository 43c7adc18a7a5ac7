"""Determinism matrix: archives made with one configuration, decoded with another.

Each row says what the format promises (decode exactly, or refuse with a named error) and
the test checks it; the rows are printed as a table (pytest -s shows it). The exact engine
(the default) promises "exact" everywhere; llmzip 0.1's float engine promises it only on
a machine like the one that wrote the archive, and refuses elsewhere.
"""

import subprocess
import sys

import pytest

import llmzip
from llmzip.codec import container as ct
from conftest import corpus_bytes

DATA = corpus_bytes("alice29.txt", 2500)
ROWS = []


@pytest.fixture(scope="module")
def archive(tiny_model):
    """The float engine's archive (llmzip 0.1): rows below check what it promises."""
    return llmzip.compress(DATA, model=tiny_model, threads=1, batch=4, seg_len=96,
                           fallback=False, engine="float")


@pytest.fixture(scope="module")
def exact_archive(tiny_model):
    return llmzip.compress(DATA, model=tiny_model, threads=1, batch=4, seg_len=96,
                           fallback=False)


def _row(name, promise, fn):
    try:
        out = fn()
        got = "exact" if out == DATA else "WRONG OUTPUT"
    except llmzip.LlmzipError as e:
        got = f"refused: {type(e).__name__}"
    ROWS.append((name, promise, got))
    return got


def test_threads_2(tiny_model, archive):
    assert _row("decode with 2 threads (made with 1)", "exact",
                lambda: llmzip.decompress(archive, model=tiny_model, threads=2)) == "exact"


def test_fresh_process(tiny_gguf, archive, tmp_path):
    p = tmp_path / "a.llmz"
    p.write_bytes(archive)
    code = (f"import sys, llmzip; sys.stdout.buffer.write(llmzip.decompress("
            f"open({str(p)!r}, 'rb').read(), model={tiny_gguf!r}))")
    got = _row("decode in a fresh process", "exact", lambda: subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert got == "exact"


def test_compress_threads_2_is_identical(tiny_model, archive):
    """Threads do not change the archive at all here (same kernels, same results)."""
    other = llmzip.compress(DATA, model=tiny_model, threads=2, batch=4, seg_len=96,
                            fallback=False, engine="float")
    got = _row("compress with 2 threads vs 1: archives identical apart from the header",
               "exact", lambda: llmzip.decompress(other, model=tiny_model, threads=1))
    assert got == "exact"
    a, b = ct.scan(archive), ct.scan(other)
    assert [c.coded_crc for c in a.chunks] == [c.coded_crc for c in b.chunks]


def test_other_batch_setting(tiny_model, archive):
    """The batch is a compress-time limit; a chunk's own segment count fixes the decoder's
    shapes, so a Decompressor has no batch to get wrong."""
    got = _row("archive made with batch 4, decoded by default settings", "exact",
               lambda: llmzip.decompress(archive, model=tiny_model))
    assert got == "exact"


def _forged(archive, **engine):
    info = ct.scan(archive)
    header = dict(info.header, engine=dict(info.header["engine"], **engine))
    start = info.chunks[0].offset - ct._CHUNK.size - 4
    return ct.header_bytes(header, info.version) + archive[start:]


# values no machine has, so that each row holds on every kind of machine
@pytest.mark.parametrize("field,value", [("torch", "2.99.0+cpu"), ("cpu", "avx2,no-such-cpu"),
                                         ("constriction", "0.0.1")])
def test_other_build_refused(tiny_model, archive, field, value):
    forged = _forged(archive, **{field: value})
    got = _row(f"archive claims another {field} ({value})", "refused: EngineMismatchError",
               lambda: llmzip.decompress(forged, model=tiny_model))
    assert got == "refused: EngineMismatchError"
    got = _row(f"same, with --ignore-engine-mismatch", "exact (checksums still checked)",
               lambda: llmzip.decompress(forged, model=tiny_model,
                                         allow_engine_mismatch=True))
    assert got == "exact"


def test_other_dtype_in_header_never_wrong(tiny_model, archive):
    """A header edited to say bfloat16: the tables differ, and the checksums catch it."""
    forged = _forged(archive, dtype="bfloat16")
    got = _row("header edited to dtype bfloat16 (made with float32)",
               "refused (never wrong output)",
               lambda: llmzip.decompress(forged, model=tiny_model))
    assert got.startswith("refused") or got == "exact"
    assert got != "WRONG OUTPUT"


# ---------------------------------------------------------------- the exact engine

@pytest.mark.parametrize("threads", [1, 2, 3])
def test_exact_any_threads(tiny_model, exact_archive, threads):
    assert _row(f"exact engine: decode with {threads} thread(s) (made with 1)", "exact",
                lambda: llmzip.decompress(exact_archive, model=tiny_model,
                                          threads=threads)) == "exact"


@pytest.mark.parametrize("kernel", ["reference", "portable", "auto"])
def test_exact_any_kernel(tiny_model, exact_archive, kernel):
    assert _row(f"exact engine: decode with kernel {kernel}", "exact",
                lambda: llmzip.decompress(exact_archive, model=tiny_model,
                                          kernel=kernel)) == "exact"


def test_exact_fresh_process(tiny_gguf, exact_archive, tmp_path):
    p = tmp_path / "e.llmz"
    p.write_bytes(exact_archive)
    code = (f"import sys, llmzip; sys.stdout.buffer.write(llmzip.decompress("
            f"open({str(p)!r}, 'rb').read(), model={tiny_gguf!r}, threads=2))")
    assert _row("exact engine: decode in a fresh process", "exact", lambda: subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True).stdout) == "exact"


def test_exact_ignores_the_writers_machine(tiny_model, exact_archive):
    """The exact engine's archive names no CPU, threads or torch: a header claiming them
    changes nothing."""
    forged = _forged(exact_archive, cpu="avx2,no-such-cpu", torch="2.99.0", threads=7)
    assert _row("exact engine: header claims another CPU, torch and threads", "exact",
                lambda: llmzip.decompress(forged, model=tiny_model)) == "exact"


def test_exact_compress_identical_whatever_the_threads(tiny_model, exact_archive):
    other = llmzip.compress(DATA, model=tiny_model, threads=3, batch=4, seg_len=96,
                            fallback=False, kernel="portable")
    got = _row("exact engine: compress with 3 threads and the portable kernel",
               "byte-identical archive", lambda: DATA if other == exact_archive else b"")
    assert got == "exact"


def test_print_matrix():
    width = max(len(r[0]) for r in ROWS) if ROWS else 10
    print()
    for name, promise, got in ROWS:
        print(f"{name:<{width}}  promise: {promise:<32}  got: {got}")
    assert all(r[2] != "WRONG OUTPUT" for r in ROWS)
