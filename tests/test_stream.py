"""llmzip.open: streaming reads and writes."""

import io
import random

import pytest

import llmzip
from conftest import corpus_bytes


@pytest.fixture(scope="module")
def archive(tiny_model):
    data = corpus_bytes("alice29.txt", 5000) + bytes(range(256)) * 40 + b"tail text " * 900
    return data, llmzip.compress(data, model=tiny_model, batch=3, seg_len=128, fallback=False)


def test_open_read_random_chunk_sizes(tiny_model, archive):
    data, blob = archive
    rng = random.Random(0)
    with llmzip.open(io.BytesIO(blob), model=tiny_model) as f:
        parts = []
        while part := f.read(rng.randint(1, 3000)):
            parts.append(part)
    assert b"".join(parts) == data


def test_open_read_path_and_readline(tiny_model, archive, tmp_path):
    data, blob = archive
    p = tmp_path / "a.llmz"
    p.write_bytes(blob)
    with llmzip.open(p, "rb", model=tiny_model) as f:
        first = f.readline()
        rest = f.read()
    assert first + rest == data


def test_open_read_truncated_raises_not_partial(tiny_model, archive):
    _, blob = archive
    for cut in (len(blob) - 1, len(blob) - 60, len(blob) // 2):
        with pytest.raises(llmzip.ArchiveError):
            with llmzip.open(io.BytesIO(blob[:cut]), model=tiny_model) as f:
                f.read()


def test_open_read_trailing_garbage_raises(tiny_model, archive):
    _, blob = archive
    with pytest.raises(llmzip.FormatError):
        llmzip.open(io.BytesIO(blob + b"x"), model=tiny_model).read()


def test_open_write_then_one_shot(tiny_model, tmp_path):
    data = b"written in pieces " * 300
    p = tmp_path / "w.llmz"
    with llmzip.open(p, "wb", model=tiny_model, batch=2, seg_len=64) as f:
        for i in range(0, len(data), 777):
            f.write(data[i:i + 777])
    assert llmzip.decompress(p.read_bytes(), model=tiny_model) == data
    # one-shot and streaming give the same bytes
    assert p.read_bytes() == llmzip.compress(data, model=tiny_model, batch=2, seg_len=64)


def test_open_bad_mode():
    with pytest.raises(llmzip.UsageError):
        llmzip.open(io.BytesIO(), "a")
