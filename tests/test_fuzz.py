"""Hostile input: only documented exceptions come out, never wrong data, never a crash.

A short hypothesis budget runs in the normal suite; scripts/fuzz.py runs the same
properties for as long as you like.
"""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmzip
from llmzip.codec import container as ct
from llmzip.errors import ArchiveError

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
DATA = b"The quick brown fox jumps over the lazy dog. " * 30 + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def good(tiny_model):
    return llmzip.compress(DATA, model=tiny_model, batch=2, seg_len=64, fallback=False)


def _decode_must_fail_or_be_exact(blob, model):
    try:
        out = llmzip.decompress(blob, model=model)
    except ArchiveError:
        return
    assert out == DATA, "silent wrong output"


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_refused(tiny_model, blob):
    with pytest.raises(ArchiveError):
        llmzip.decompress(blob, model=tiny_model)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_after_magic_refused(tiny_model, tail):
    with pytest.raises(ArchiveError):
        llmzip.decompress(ct.MAGIC + tail, model=tiny_model)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(1, 255)), min_size=1,
                max_size=8))
def test_mutated_archive(tiny_model, good, edits):
    bad = bytearray(good)
    for pos, x in edits:
        bad[pos % len(bad)] ^= x
    _decode_must_fail_or_be_exact(bytes(bad), tiny_model)


@SETTINGS
@given(st.integers(0, 10 ** 6), st.binary(max_size=50))
def test_truncated_or_extended(tiny_model, good, cut, extra):
    blob = good[:cut % len(good)] if not extra else good + extra
    with pytest.raises(ArchiveError):
        llmzip.decompress(blob, model=tiny_model)


@SETTINGS
@given(method=st.sampled_from([ct.METHOD_STORED, ct.METHOD_ZSTD, ct.METHOD_XZ,
                             ct.METHOD_MODEL]),
       raw_len=st.integers(0, 3000), payload=st.binary(max_size=200))
def test_valid_crcs_garbage_payload(tiny_model, good, method, raw_len, payload):
    """Records whose CRCs are right but whose content is garbage reach the decoders."""
    header = ct.scan(good).header
    rec = ct._CHUNK.pack(method, raw_len, len(payload), 0, ct.crc32(payload))
    blob = (ct.header_bytes(header) + rec + struct.pack("<I", ct.crc32(rec)) + payload +
            ct.footer_bytes(1, raw_len, bytes(32)))
    with pytest.raises(ArchiveError):
        llmzip.decompress(blob, model=tiny_model)


@pytest.mark.parametrize("value", [2 ** 32 - 1, 2 ** 31, 2 ** 26 + 1])
def test_huge_claims_refused_before_allocation(value):
    head = ct.header_bytes({"format": "llmzip", "mode": "prior"})
    rec = ct._CHUNK.pack(ct.METHOD_ZSTD, value, 16, 0, 0)
    with pytest.raises(ArchiveError):
        llmzip.decompress(head + rec + struct.pack("<I", ct.crc32(rec)) + bytes(16))
    foot = ct.footer_bytes(2 ** 31, 2 ** 63, bytes(32))
    with pytest.raises(ArchiveError):
        llmzip.decompress(head + foot)
