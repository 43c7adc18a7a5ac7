"""Golden archives made by scripts/make_golden.py: good ones decode, bad ones fail for
their own named reason."""

import json
import os

import pytest

import llmzip
import llmzip.codec.container as ct
import llmzip.errors as errors

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
MANIFEST = json.load(open(os.path.join(GOLDEN, "manifest.json")))


@pytest.fixture(scope="module")
def golden_model():
    from llmzip.engine.models.registry import load_model
    return load_model(os.path.join(GOLDEN, "tiny.gguf"))


@pytest.mark.parametrize("name", sorted(MANIFEST["good"]))
def test_golden_archive_decodes(golden_model, name):
    """Today's archives come from the exact engine: they decode on any machine, with no
    engine check to relax."""
    blob = open(os.path.join(GOLDEN, f"{name}.llmz"), "rb").read()
    orig = open(os.path.join(GOLDEN, f"{name}.orig"), "rb").read()
    assert llmzip.decompress(blob, model=golden_model) == orig


@pytest.mark.parametrize("name", sorted(MANIFEST["legacy"]))
def test_golden_archive_of_earlier_version_decodes(golden_model, name):
    entry = MANIFEST["legacy"][name]
    blob = open(os.path.join(GOLDEN, f"{name}.llmz"), "rb").read()
    orig = open(os.path.join(GOLDEN, entry["original"]), "rb").read()
    assert ct.scan(blob).version == entry["version"] < ct.VERSION
    assert _decodes_where_it_can(blob, golden_model) in (orig, "refused")


def _decodes_where_it_can(blob, model):
    """What an archive of llmzip 0.1's float engine promises: the original where the
    machine matches the one that wrote it; elsewhere a refusal (EngineMismatchError, whose
    message names the way out), and with the check relaxed either the original or a
    ChecksumError, never wrong output. (Archives without model chunks always decode.)"""
    try:
        return llmzip.decompress(blob, model=model)
    except errors.EngineMismatchError as e:
        assert "exact engine" in str(e)
    try:
        out = llmzip.decompress(blob, model=model, allow_engine_mismatch=True)
    except errors.ChecksumError:
        return "refused"
    return out


def test_legacy_archives_cover_version_1():
    assert {e["version"] for e in MANIFEST["legacy"].values()} >= {1}


@pytest.mark.parametrize("name", sorted(MANIFEST["bad"]))
def test_bad_archive_refused_for_its_reason(golden_model, name):
    blob = open(os.path.join(GOLDEN, f"bad_{name}.llmz"), "rb").read()
    expected = getattr(errors, MANIFEST["bad"][name])
    with pytest.raises(expected) as e:
        llmzip.decompress(blob, model=golden_model, allow_engine_mismatch=True)
    assert type(e.value) is expected, f"{name}: {type(e.value).__name__}: {e.value}"


def test_good_archives_cover_methods():
    methods = {m for v in MANIFEST["good"].values() for m in v["methods"]}
    assert {"model", "zstd", "xz"} <= methods


REAL = os.path.join(GOLDEN, "real")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_real_model_golden_decodes_here(name):
    """Made once with the real model by the exact engine (scripts/make_golden.py --real);
    decodes bit for bit on whatever machine runs the tests."""
    from conftest import corpus_bytes
    blob = open(os.path.join(REAL, f"{name}.llmz"), "rb").read()
    assert ct.scan(blob).header["engine"]["kind"] == "exact"
    assert llmzip.decompress(blob) == corpus_bytes("alice29.txt", 1500)


@pytest.mark.parametrize("name", sorted(MANIFEST.get("trees", {})))
def test_golden_directory_archive_extracts(golden_model, name, tmp_path):
    """A directory archive (format version 6, or 7 with adaptive models; earlier ones
    under v<N>/) restores its names, modes, mtimes, links."""
    import hashlib
    import stat
    want = MANIFEST["trees"][name]
    path = os.path.join(GOLDEN, f"{name}.llmz")
    assert ct.scan(open(path, "rb").read()).version == want["version"] >= 6
    assert llmzip.list_archive(path) == want["entries"]
    out = tmp_path / "out"
    llmzip.extract(path, str(out), model=golden_model)
    for e in want["entries"]:
        p = os.path.join(out, *e["path"].split("/"))
        st = os.lstat(p)
        assert st.st_mtime_ns == e["mtime_ns"], e["path"]
        if e["type"] == "link":
            assert os.readlink(p) == e["target"]
            continue
        assert stat.S_IMODE(st.st_mode) == e["mode"], e["path"]
        if e["type"] == "file":
            digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
            assert digest == want["sha256"][e["path"]], e["path"]


@pytest.mark.parametrize("name", sorted(MANIFEST.get("bad_trees", {})))
def test_golden_hostile_directory_archive_refused(golden_model, name, tmp_path):
    path = os.path.join(GOLDEN, f"bad_tree_{name}.llmz")
    expected = getattr(errors, MANIFEST["bad_trees"][name])
    with pytest.raises(expected):
        llmzip.extract(path, str(tmp_path / "out"), model=golden_model)
    assert os.listdir(tmp_path) == []
