"""Random access: the chunk records are the index; --range and decompress_range decode
only the chunks that hold the bytes asked for (counted by Decompressor.chunks_decoded)."""

import io
import os
import random

import pytest

import llmzip
from llmzip.cli import main
from llmzip.codec import container as ct
from llmzip.errors import ChecksumError, UsageError
from conftest import corpus_bytes

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


@pytest.fixture(scope="module")
def multi(tiny_model):
    """A text / binary / text input in many chunks (model chunks kept: no fallback)."""
    rng = random.Random(7)
    data = (corpus_bytes("alice29.txt", 9000) + bytes(rng.randrange(256) for _ in range(8192))
            + corpus_bytes("alice29.txt", 18000)[9000:])
    blob = llmzip.compress(data, model=tiny_model, batch=2, seg_len=120, fallback=False)
    return data, blob


def _needed(info, start, length):
    end = min(start + length, info.footer.original_len)
    if end <= start:
        return 0
    return sum(1 for c in info.chunks if c.orig_offset < end and c.orig_offset + c.raw_len > start)


def test_index_from_records(multi):
    data, blob = multi
    info = ct.scan(blob)
    assert len(info.chunks) >= 8
    methods = {c.method_name for c in info.chunks}
    assert "model" in methods and len(methods) >= 2
    pos = 0
    for c in info.chunks:                       # original offsets follow the records
        assert c.orig_offset == pos
        assert blob[c.record_offset] == c.method
        pos += c.raw_len
    assert pos == len(data) == info.footer.original_len


def test_range_decodes_only_the_chunks_needed(multi, tiny_model):
    data, blob = multi
    info = ct.scan(blob)
    c3 = info.chunks[3]
    cases = [(0, 1), (c3.orig_offset, c3.raw_len), (c3.orig_offset + 5, 10),
             (c3.orig_offset - 1, 2), (len(data) - 7, 7), (len(data) - 7, 1000),
             (len(data), 5), (100, 0), (0, len(data))]
    rng = random.Random(1)
    cases += [(rng.randrange(len(data)), rng.randrange(1, 3000)) for _ in range(6)]
    dec = llmzip.Decompressor(tiny_model)
    for start, length in cases:
        got = dec.decompress_range(blob, start, length)
        assert got == data[start:start + length], (start, length)
        assert dec.chunks_decoded == _needed(info, start, length), (start, length)
    dec.decompress_range(blob, c3.orig_offset + 5, 10)
    assert dec.chunks_decoded == 1
    dec.decompress(blob)
    assert dec.chunks_decoded == len(info.chunks)


def test_range_from_a_file_object_and_a_path(multi, tiny_model, tmp_path):
    data, blob = multi
    p = tmp_path / "a.llmz"
    p.write_bytes(blob)
    assert llmzip.decompress_range(str(p), 5000, 9000, model=tiny_model) == data[5000:14000]
    f = io.BytesIO(b"junk" + blob)               # an archive that starts mid-file
    f.seek(4)
    dec = llmzip.Decompressor(tiny_model)
    assert dec.decompress_range(f, 12345, 678) == data[12345:13023]


def test_range_skips_damage_it_does_not_read_and_refuses_damage_it_does(multi, tiny_model):
    data, blob = multi
    info = ct.scan(blob)
    last = info.chunks[-1]
    bad = bytearray(blob)
    bad[last.offset + last.coded_len // 2] ^= 0x55    # coded bytes of the last chunk
    first = info.chunks[0]
    assert llmzip.decompress_range(bytes(bad), 0, first.raw_len, model=tiny_model) == \
        data[:first.raw_len]
    with pytest.raises(ChecksumError):
        llmzip.decompress_range(bytes(bad), last.orig_offset, 1, model=tiny_model)
    with pytest.raises(ChecksumError):                 # the whole archive: still refused
        llmzip.decompress(bytes(bad), model=tiny_model)


def test_range_start_past_the_end_is_refused(multi, tiny_model):
    data, blob = multi
    with pytest.raises(UsageError):
        llmzip.decompress_range(blob, len(data) + 1, 1, model=tiny_model)
    with pytest.raises(UsageError):
        llmzip.decompress_range(blob, -1, 1, model=tiny_model)


@pytest.mark.parametrize("name", ["text", "mixed", "v4/text", "v2/text"])
def test_range_on_golden_archives(name):
    """Archives written before random access existed have the same records: the index."""
    path = os.path.join(GOLDEN, f"{name}.llmz")
    if not os.path.exists(path):
        pytest.skip(f"no golden {name}")
    orig_name = os.path.basename(name)
    orig = open(os.path.join(GOLDEN, f"{orig_name}.orig"), "rb").read()
    model = os.path.join(GOLDEN, "tiny.gguf")
    try:
        got = llmzip.decompress_range(path, 10, 200, model=model)
    except llmzip.EngineMismatchError:               # float-engine archive, other machine
        pytest.skip("float-engine archive from another machine")
    assert got == orig[10:210]


def test_cli_range(multi, tiny_gguf, tiny_model, tmp_path, capsys):
    data, blob = multi
    arc = tmp_path / "m.llmz"
    # the fixture's archive names the tiny model by its path; the CLI gets the same file
    arc.write_bytes(blob)
    info = ct.scan(blob)
    c2 = info.chunks[2]
    out = tmp_path / "part"
    assert main(["decompress", str(arc), "--model", tiny_model.path, "--range",
                 f"{c2.orig_offset + 1}:{c2.raw_len - 2}", "-o", str(out)]) == 0
    assert out.read_bytes() == data[c2.orig_offset + 1:c2.orig_offset + c2.raw_len - 1]
    assert f"1 of {len(info.chunks)} chunks decoded" in capsys.readouterr().err
    out2 = tmp_path / "tail"
    assert main(["decompress", str(arc), "--model", tiny_model.path, "--range", "20000:",
                 "-o", str(out2), "-q"]) == 0
    assert out2.read_bytes() == data[20000:]
    assert main(["decompress", str(arc), "--model", tiny_model.path, "--range", "5:5"]) == 1
    assert not (tmp_path / "m").exists()
    assert main(["decompress", str(arc), "--range", "x:5", "-c"]) == 1


def test_long_text_is_planned_in_pieces(tiny_model, monkeypatch):
    """Text spans longer than PLAN_PIECE are tokenised piece by piece, cut after a
    newline: chunks end there, and the archive still round-trips."""
    from llmzip.codec import api
    monkeypatch.setattr(api, "PLAN_PIECE", 4000)
    data = corpus_bytes("alice29.txt", 11000)
    blob = llmzip.compress(data, model=tiny_model, batch=4, seg_len=500, fallback=False)
    ends = set()
    pos = 0
    for c in ct.scan(blob).chunks:
        pos += c.raw_len
        ends.add(pos)
    cut = data.rfind(b"\n", 0, 4000) + 1
    assert cut in ends and data[cut - 1:cut] == b"\n"
    assert llmzip.decompress(blob, model=tiny_model) == data
