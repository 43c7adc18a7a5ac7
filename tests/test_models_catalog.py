"""`llmzip models` (list, add, remove) and `--model auto`."""

import json

import pytest

import llmzip
from llmzip.cli import main
from llmzip.codec import container as ct
from llmzip.codec.api import choose_auto
from llmzip.engine.models import catalog
from llmzip.engine.models.tiny import write_tiny_gguf
from conftest import corpus_bytes


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMZIP_HOME", str(tmp_path / "home"))
    return tmp_path


def test_models_add_list_remove(home, tiny_gguf, tiny_model, capsys):
    # tiny_model: the same file already loaded under its file name; "mytiny" must still
    # be the name written into archives
    assert tiny_model.name == "tiny"
    assert main(["models", "add", "mytiny", tiny_gguf]) == 0
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    mine = [r for r in rows if r["name"] == "mytiny"][0]
    assert mine["status"] == "ok" and mine["arch"] == "llama" and mine["vocab"] > 256
    assert any(r["name"] == "smollm2-135m" for r in rows)
    # the name now works wherever a model is asked for
    blob = llmzip.compress(b"registered model " * 50, model="mytiny", fallback=False)
    assert ct.scan(blob).header["model"]["name"] == "mytiny"
    assert llmzip.decompress(blob) == b"registered model " * 50
    assert main(["models", "remove", "mytiny"]) == 0
    assert "mytiny" not in catalog.user_models()


def test_models_add_refuses_bad_file(home, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    assert main(["models", "add", "bad", str(bad)]) == 1
    assert main(["models", "add", "smollm2-135m", str(bad)]) == 1


def test_model_auto_picks_best_and_records_it(home, tmp_path, monkeypatch):
    a = write_tiny_gguf(str(tmp_path / "a.gguf"), seed=3)
    b = write_tiny_gguf(str(tmp_path / "b.gguf"), seed=4)
    catalog.register("tiny-a", a)
    catalog.register("tiny-b", b)
    monkeypatch.setattr(catalog, "list_models", lambda: [
        {"name": "tiny-a", "status": "ok"}, {"name": "tiny-b", "status": "ok"}])
    data = corpus_bytes("alice29.txt", 3000)
    name, scores = choose_auto(data)
    assert set(scores) == {"tiny-a", "tiny-b"} and name == min(scores, key=scores.get)
    c = llmzip.Compressor("auto", batch=4, seg_len=128, fallback=False)
    blob = c.compress(data)
    header = ct.scan(blob).header
    assert header["model"]["name"] == name
    assert set(header["model"]["chosen_by"]["auto"]) == {"tiny-a", "tiny-b"}
    assert llmzip.decompress(blob) == data


def test_truncated_or_garbled_gguf_is_a_model_error(tmp_path):
    """A GGUF cut anywhere in its metadata (the vocabulary's strings included) or with a
    token that is not UTF-8 is refused with ModelError, never another exception."""
    from llmzip.engine.models.registry import load_model
    from llmzip.errors import ModelError
    data = open(write_tiny_gguf(str(tmp_path / "t.gguf")), "rb").read()
    key = data.index(b"tokenizer.ggml.tokens")
    first = key + len(b"tokenizer.ggml.tokens") + 4 + 4 + 8 + 8   # type, item type, n, len
    q = tmp_path / "bad.gguf"
    for cut in list(range(8, first + 600, 37)) + [first, first + 1]:
        q.write_bytes(data[:cut])
        with pytest.raises(ModelError):
            load_model(str(q))
    q.write_bytes(data[:first] + b"\xff" + data[first + 1:])
    with pytest.raises(ModelError, match="utf-8"):
        load_model(str(q))
