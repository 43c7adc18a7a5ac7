"""llmzip.tools.baselines: every codec behind one interface; round trips; the registry."""

import os

import pytest

from llmzip.tools import baselines as bl
from conftest import corpus_bytes

INPUTS = {
    "text": corpus_bytes("alice29.txt", 2000),
    "binary": bytes(range(256)) * 4 + os.urandom(500),
    "empty": b"",
    "one_byte": b"\x00",
}

CLASSICAL = bl.classical_codecs(include_unavailable=True)


def test_codecs_registry_names():
    assert set(bl.CLASSICAL) <= set(bl.CODECS)
    assert "llmzip-smollm2-135m" in bl.CODECS
    for name in bl.CLASSICAL:
        c = bl.get_codec(name)
        assert isinstance(c, bl.CodecProtocol)
        assert c.name == name and c.kind == "classical"


def test_get_codec_aliases_and_unknown():
    assert bl.get_codec("xz").name == "xz-9e"
    assert bl.get_codec("llmzip").name == "llmzip-smollm2-135m"
    with pytest.raises(KeyError):
        bl.get_codec("no-such-codec")


@pytest.mark.parametrize("codec", CLASSICAL, ids=[c.name for c in CLASSICAL])
@pytest.mark.parametrize("kind", INPUTS)
def test_classical_codec_compress_decompress_round_trip(codec, kind):
    if not codec.available():
        pytest.skip(f"{codec.name} unavailable: {codec.unavailable_reason()}")
    data = INPUTS[kind]
    blob = codec.compress(data)
    assert isinstance(blob, bytes)
    assert codec.decompress(blob) == data


def test_classical_codecs_compress_text():
    data = INPUTS["text"]
    for c in bl.classical_codecs():
        assert len(c.compress(data)) < len(data) * 0.75, c.name


def test_all_codecs_available_here():
    """The baselines the design names are all installed in the dev environment."""
    missing = bl.unavailable_codecs()
    assert not missing, missing


def test_unavailable_codec_reports_reason():
    class Missing(bl.Codec):
        name, module, pip_name = "missing-1", "no_such_module_xyz", "no-such-dist"

    c = Missing()
    assert c.available() is False
    assert "no_such_module_xyz" in c.unavailable_reason()
    assert "pip install no-such-dist" in c.unavailable_reason()
    assert c.describe()["available"] is False
    with pytest.raises(RuntimeError, match="unavailable"):
        c.compress(b"x")
    u = bl.UnavailableCodec("zpaq-5", "the zpaq wheel does not load")
    assert not u.available() and u.unavailable_reason() == "the zpaq wheel does not load"


def test_llmzip_codec_unavailable_model():
    c = bl.get_codec("llmzip:/no/such/model.gguf")
    assert c.name == "llmzip-model"
    assert not c.available()
    assert "unknown model" in c.unavailable_reason()


def test_llmzip_codec_round_trip_tiny_model(tiny_gguf):
    c = bl.LlmzipCodec(tiny_gguf, batch=2, seg_len=64, fallback=False, threads=1)
    assert c.available() and c.kind == "llm"
    assert c.name == "llmzip-tiny"
    assert c.prepare() >= 0.0
    for kind in ("text", "empty", "binary"):
        data = INPUTS[kind][:300]
        blob = c.compress(data)
        assert c.decompress(blob) == data
    assert c.last_stats is not None
    p = c.params()
    assert p["batch"] == 2 and p["seg_len"] == 64 and p["engine"] == "exact"
    assert p["arith"] == 1 and "dtype" not in p


def test_llmzip_codec_accepts_loaded_model(tiny_model):
    c = bl.LlmzipCodec(tiny_model, batch=1, seg_len=32, threads=1)
    data = b"the cat sat on the mat. " * 4
    assert c.decompress(c.compress(data)) == data

