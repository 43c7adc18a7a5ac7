import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmzip.codec.tokenizer import tokenizer_for
from conftest import corpus_bytes

SAMPLES = [
    b"", b"\x00", bytes(range(256)), bytes(range(255, -1, -1)) * 3,
    b"\xed\xa0\x80 lone surrogate bytes \xed\xbf\xbf", b"\xc0\xc1\xf5\xff invalid",
    b"truncated \xe4\xb8", "中文文本，包括标点。".encode(), "emoji 😀👍🏽 and ZWJ 👨‍👩‍👧".encode(),
    "Ünïcödé \u0000 \u200b".encode(), b"digits 1234567890 3.14159",
    chr(0x50000).encode() + chr(0x90000).encode(),      # planes whose lead bytes lack tokens
    b"<|endoftext|><|im_start|>user", b"\r\n\r\n  \t\t", b"a" * 5000,
]


@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
def test_encode_decode_exact_tiny(tiny_model, data):
    tok = tokenizer_for(tiny_model)
    assert tok.decode(tok.encode(data)) == data


@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
def test_encode_decode_exact_default(default_model, data):
    tok = tokenizer_for(default_model)
    assert tok.decode(tok.encode(data)) == data


@pytest.mark.parametrize("name", ["alice29.txt", "fireworks.jpeg", "kppkn.gtb", "paper-100k.pdf"])
def test_corpus_round_trip_default(default_model, name):
    data = corpus_bytes(name)
    tok = tokenizer_for(default_model)
    assert tok.decode(tok.encode(data)) == data


def test_random_bytes_default(default_model):
    data = os.urandom(50_000)
    tok = tokenizer_for(default_model)
    assert tok.decode(tok.encode(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_round_trip(default_model, data):
    tok = tokenizer_for(default_model)
    assert tok.decode(tok.encode(data)) == data


def test_digits_split_individually(default_model):
    tok = tokenizer_for(default_model)
    ids = tok.encode(b"12345")
    assert len(ids) == 5


def test_decode_rejects_out_of_range(tiny_model):
    from llmzip.errors import FormatError
    with pytest.raises(FormatError):
        tokenizer_for(tiny_model).decode([10 ** 6])
