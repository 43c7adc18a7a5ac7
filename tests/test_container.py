"""Archive structure: corrupt, truncated and hostile archives are refused."""

import os
import struct

import pytest

import llmzip
from llmzip.codec import container as ct
from llmzip.errors import (ArchiveError, ChecksumError, FormatError, LimitError,
                           TruncatedError, UnsupportedVersionError)
from conftest import corpus_bytes


@pytest.fixture(scope="module")
def small_archive(tiny_model):
    data = corpus_bytes("alice29.txt", 2000) + "… ünïcode ✓".encode()
    blob = llmzip.compress(data, model=tiny_model, batch=2, seg_len=128, fallback=False)
    assert {c.method for c in ct.scan(blob).chunks} >= {ct.METHOD_MODEL}
    return data, blob


def test_magic_is_not_utf8():
    with pytest.raises(UnicodeDecodeError):
        ct.MAGIC.decode("utf-8")
    assert ct.MAGIC[0] >= 0x80


def test_scan_lists_chunks(small_archive):
    data, blob = small_archive
    info = ct.scan(blob)
    assert info.footer.original_len == len(data)
    assert info.archive_len == len(blob)
    assert sum(c.raw_len for c in info.chunks) == len(data)


def test_every_flipped_byte_refused(tiny_model, small_archive):
    data, blob = small_archive
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x41
        try:
            out = llmzip.decompress(bytes(bad), model=tiny_model)
        except ArchiveError:
            continue
        assert out == data, f"flip at {i} gave wrong output"
        pytest.fail(f"flip at offset {i} was not detected")


def test_every_truncation_refused(tiny_model, small_archive):
    _, blob = small_archive
    for n in range(len(blob)):
        with pytest.raises(ArchiveError):
            llmzip.decompress(blob[:n], model=tiny_model)


def test_trailing_data_refused(small_archive):
    _, blob = small_archive
    with pytest.raises(FormatError, match="trailing"):
        llmzip.decompress(blob + b"\x00")


def test_bad_magic():
    with pytest.raises(FormatError, match="magic"):
        llmzip.decompress(b"PK\x03\x04" + bytes(100))


def test_unknown_version(small_archive):
    _, blob = small_archive
    bad = bytearray(blob)
    bad[8:10] = struct.pack("<H", 99)
    with pytest.raises(UnsupportedVersionError):
        llmzip.decompress(bytes(bad))


def test_header_crc(small_archive):
    _, blob = small_archive
    bad = bytearray(blob)
    bad[20] ^= 1
    with pytest.raises((ChecksumError, FormatError)):
        llmzip.decompress(bytes(bad))


def _with_record(method, raw_len, coded_len, payload=b""):
    rec = ct._CHUNK.pack(method, raw_len, coded_len, 0, ct.crc32(payload))
    return rec + struct.pack("<I", ct.crc32(rec)) + payload


def test_huge_lengths_refused_before_allocation():
    head = ct.header_bytes({"format": "llmzip", "mode": "prior"})
    for raw_len, coded_len in [(2 ** 32 - 1, 10), (100, 2 ** 32 - 1), (2 ** 26 + 1, 5)]:
        with pytest.raises((LimitError, TruncatedError)):
            ct.scan(head + _with_record(ct.METHOD_ZSTD, raw_len, coded_len))


def test_footer_sum_mismatch():
    head = ct.header_bytes({"format": "llmzip", "mode": "prior"})
    blob = head + ct.chunk_bytes(ct.METHOD_STORED, b"abc", b"abc") + \
        ct.footer_bytes(1, 2 ** 40, ct.sha256(b"abc"))
    with pytest.raises(FormatError):
        ct.scan(blob)


def test_whole_checksum_detects_swapped_chunks():
    head = ct.header_bytes({"format": "llmzip", "mode": "prior"})
    a, b = ct.chunk_bytes(0, b"first", b"first"), ct.chunk_bytes(0, b"second", b"second")
    blob = head + b + a + ct.footer_bytes(2, 11, ct.sha256(b"firstsecond"))
    with pytest.raises(ChecksumError):
        llmzip.decompress(blob)


def test_header_dict_is_frozen():
    """Version 2 and 3 archives depend on these exact bytes (docs/format.md gives the
    hashes); version 3's dictionary is version 2's followed by one more header."""
    import hashlib
    assert hashlib.sha256(ct.HEADER_DICT).hexdigest() == ct.HEADER_DICT_SHA256
    assert "3c34fd0fd76b3600161ecfbf096c9289bd0e9927419c2e0dd661096256bfd079" in open(
        os.path.join(os.path.dirname(__file__), "..", "docs", "format.md")).read()
    assert hashlib.sha256(ct.HEADER_DICT_V3).hexdigest() == ct.HEADER_DICT_V3_SHA256
    assert ct.HEADER_DICT_V3.startswith(ct.HEADER_DICT) and len(ct.HEADER_DICT_V3) == 1841
    assert ct.HEADER_DICT_V3_SHA256 in open(
        os.path.join(os.path.dirname(__file__), "..", "docs", "format.md")).read()
    assert hashlib.sha256(ct.HEADER_DICT_V5).hexdigest() == ct.HEADER_DICT_V5_SHA256
    assert ct.HEADER_DICT_V5.startswith(ct.HEADER_DICT_V3) and len(ct.HEADER_DICT_V5) == 2120
    assert ct.HEADER_DICT_V5_SHA256 in open(
        os.path.join(os.path.dirname(__file__), "..", "docs", "format.md")).read()
    assert hashlib.sha256(ct.HEADER_DICT_V7).hexdigest() == ct.HEADER_DICT_V7_SHA256
    assert ct.HEADER_DICT_V7.startswith(ct.HEADER_DICT_V5) and len(ct.HEADER_DICT_V7) == 2465
    assert ct.HEADER_DICT_V7_SHA256 in open(
        os.path.join(os.path.dirname(__file__), "..", "docs", "format.md")).read()
    assert hashlib.sha256(ct.HEADER_DICT_V9).hexdigest() == ct.HEADER_DICT_V9_SHA256
    assert ct.HEADER_DICT_V9.startswith(ct.HEADER_DICT_V7) and len(ct.HEADER_DICT_V9) == 4574
    assert ct.HEADER_DICT_V9_SHA256 in open(
        os.path.join(os.path.dirname(__file__), "..", "docs", "format.md")).read()


def test_default_header_is_small():
    """A default SmolLM2 header with the v3 engine profile: a body of about 64 bytes."""
    h = {"format": "llmzip", "llmzip": "0.1.0", "mode": "prior",
         "model": {"arch": "llama", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                   "fingerprint": "ab" * 32, "name": "smollm2-135m", "params": 134515008,
                   "vocab": 49152},
         "engine": {"attention": "bf16-kernel", "batch": 64, "constriction": "0.5.0",
                    "cpu": "avx2,avx512f,avx512_bf16", "dtype": "bfloat16", "precision": 24,
                    "seg_len": 2048, "threads": 2, "torch": "2.13.0+cpu"}}
    blob = ct.header_bytes(h, 3)
    assert len(blob) - 20 < 70
    assert ct.scan(blob + ct.footer_bytes(0, 0, ct.sha256(b""))).header == h


def test_default_exact_header_is_small():
    """A default SmolLM2 header of the exact engine (version 5): about its two hashes."""
    h = {"format": "llmzip", "llmzip": "0.2.0", "mode": "prior",
         "model": {"arch": "llama", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                   "fingerprint": "ab" * 32, "name": "smollm2-135m", "params": 134515008,
                   "vocab": 49152},
         "engine": {"arith": 1, "batch": 64, "kind": "exact", "precision": 24,
                    "seg_len": 2048, "weights": "cd" * 8}}
    blob = ct.header_bytes(h, 5)
    assert len(blob) - 20 < 70
    assert ct.scan(blob + ct.footer_bytes(0, 0, ct.sha256(b""))).header == h


SMOLLM2 = {"arch": "llama", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
           "fingerprint": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
           "name": "smollm2-135m", "params": 134515008, "vocab": 49152}
LEVEL6 = {"adapt": {"bias": 14000, "match": 20000, "ngram": 6000}, "arith": 1, "batch": 64,
          "kind": "exact", "precision": 24, "seg_len": 16384, "slide": "shift",
          "stride": 256, "weights": "dea72970ce9441da", "window": 4096}


def test_version_9_headers_cost_what_varies():
    """Version 9's dictionary holds today's default header whole: a level 6 SmolLM2
    header costs under 20 bytes of body (114 with version 8's dictionary), one of another
    model still about its hashes, and every one reads back."""
    import json
    h = {"format": "llmzip", "llmzip": "0.10.0", "mode": "prior", "model": SMOLLM2,
         "engine": LEVEL6}
    other = json.loads(json.dumps(h))
    other["model"]["fingerprint"], other["engine"]["weights"] = "ab" * 32, "cd" * 8
    sizes = {}
    for name, head in (("default", h), ("other", other)):
        for v in (8, 9):
            blob = ct.header_bytes(head, v)
            sizes[name, v] = len(blob) - 20
            assert ct.scan(blob + ct.footer_bytes(0, 0, ct.sha256(b""))).header == head
    assert sizes["default", 9] < 20 < 100 < sizes["default", 8]
    assert sizes["other", 9] < 60


def _v1_header(header: dict) -> bytes:
    import json
    import zlib
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = z.compress(text) + z.flush()
    head = ct._HEAD.pack(ct.MAGIC, 1, 0, len(body)) + body
    return head + struct.pack("<I", ct.crc32(head[8:]))


def test_header_bytes_reads_back_and_version_1_still_reads():
    h = {"format": "llmzip", "mode": "prior", "model": {"name": "smollm2-135m",
         "fingerprint": "ab" * 32, "vocab": 49152}, "engine": {"dtype": "bfloat16"}}
    v2, v1 = ct.header_bytes(h), _v1_header(h)
    for blob, version in ((v2, ct.VERSION), (v1, 1)):
        r = ct.ArchiveReader(blob)
        assert r.read_header() == h and r.version == version
    assert len(v2) < len(v1) - 40          # the preset dictionary pays for the key names


def test_unknown_version_message_names_what_is_read(small_archive):
    _, blob = small_archive
    bad = bytearray(blob)
    bad[8:10] = struct.pack("<H", ct.VERSION + 1)
    with pytest.raises(UnsupportedVersionError) as e:
        llmzip.decompress(bytes(bad))
    assert "reads version 1, 2" in str(e.value) and "upgrade" in str(e.value)
