"""The classical chunk methods (llmzip.codec.classical): stored, zstd -19 and xz -9e."""

import lzma
import os

import pytest

import llmzip
from llmzip.codec import classical as cl
from llmzip.codec import container as ct
from llmzip.errors import FormatError
from conftest import corpus_bytes

INPUTS = {
    "random": os.urandom(3000),                       # stored: nothing shrinks it
    "short_repeat": b"abc" * 1000,                    # zstd: xz's stream costs more here
    "text": corpus_bytes("alice29.txt", 20000),       # xz
    "urls": corpus_bytes("urls.10K", 20000),          # xz
    "empty": b"",
}


@pytest.mark.parametrize("name", INPUTS)
def test_best_classical_is_the_smallest_and_decodes(name):
    raw = INPUTS[name]
    method, coded = cl.best_classical(raw)
    sizes = {ct.METHOD_STORED: len(raw), ct.METHOD_ZSTD: len(cl.zstd_compress(raw)),
             ct.METHOD_XZ: len(cl.xz_compress(raw))}
    assert len(coded) == min(sizes.values()) == sizes[method]
    assert cl.decode_classical(method, coded, len(raw)) == raw


def test_best_classical_uses_every_method():
    chosen = {ct.METHOD_NAMES[cl.best_classical(INPUTS[n])[0]]
              for n in ("random", "short_repeat", "text")}
    assert chosen == {"stored", "zstd", "xz"}


def test_xz_chunk_is_xz_minus_9e_without_the_container():
    raw = INPUTS["urls"]
    xz = lzma.compress(raw, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    assert len(cl.xz_compress(raw)) < len(xz) - 40     # same LZMA2 data, no headers/index


def test_xz_dict_size():
    assert cl.xz_dict_size(0) == cl.xz_dict_size(1) == 4096
    assert cl.xz_dict_size(4097) == 8192 and cl.xz_dict_size(8192) == 8192
    assert cl.xz_dict_size(ct.MAX_CHUNK_RAW) == ct.MAX_CHUNK_RAW


def test_xz_decompress_refuses_corrupt_or_wrong_length():
    raw = INPUTS["text"]
    coded = cl.xz_compress(raw)
    assert cl.xz_decompress(coded, len(raw)) == raw
    bad = bytearray(coded)
    bad[len(bad) // 2] ^= 0xFF
    for what, (data, n) in {"truncated": (coded[:-10], len(raw)),
                            "trailing": (coded + b"\x00", len(raw)),
                            "longer than raw_len": (coded, len(raw) - 1),
                            "shorter than raw_len": (coded, len(raw) + 1)}.items():
        with pytest.raises(FormatError):
            cl.xz_decompress(data, n)
            pytest.fail(f"{what}: accepted")
    # LZMA2 has no checksum of its own: a flipped byte is refused here or, should it
    # still decode to raw_len bytes, by the chunk's CRC (never the original bytes)
    try:
        assert cl.xz_decompress(bytes(bad), len(raw)) != raw
    except FormatError:
        pass


def test_decode_classical_refuses_other_methods():
    with pytest.raises(FormatError, match="not classical"):
        cl.decode_classical(ct.METHOD_MODEL, b"", 0)


def test_xz_chunk_archive_is_version_4_and_version_3_refuses_it():
    raw = INPUTS["text"]
    chunk = ct.chunk_bytes(ct.METHOD_XZ, raw, cl.xz_compress(raw))
    head = {"format": "llmzip", "mode": "prior"}
    foot = ct.footer_bytes(1, len(raw), ct.sha256(raw))
    assert ct.version_for({ct.METHOD_XZ, ct.METHOD_ZSTD}) == 4
    assert ct.version_for({ct.METHOD_ZSTD}) == ct.version_for(()) == 3
    assert ct.version_for({ct.METHOD_MODEL, ct.METHOD_XZ}) == ct.version_for({ct.METHOD_ONLINE}) == 9
    assert llmzip.decompress(ct.header_bytes(head, 4) + chunk + foot) == raw
    with pytest.raises(FormatError, match="needs version 4"):
        llmzip.decompress(ct.header_bytes(head, 3) + chunk + foot)


def test_compress_writes_the_oldest_version_that_holds_the_archive(tiny_model):
    patterned = bytes((i * 7919 + (i >> 3) * 31) & 0xFF for i in range(6000))  # binary
    for raw, method, version in ((INPUTS["random"], "stored", 3), (patterned, "xz", 4)):
        c = llmzip.Compressor(tiny_model)
        blob = c.compress(raw)
        assert c.stats.chunks == {method: 1} and c.stats.model_bytes == 0
        assert ct.scan(blob).version == version
        assert llmzip.decompress(blob) == raw
