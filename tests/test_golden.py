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
    blob = open(os.path.join(GOLDEN, f"{name}.llmz"), "rb").read()
    orig = open(os.path.join(GOLDEN, f"{name}.orig"), "rb").read()
    # made on another machine maybe: the engine check is what the format promises to
    # relax; the whole-content SHA-256 still guards the output
    assert llmzip.decompress(blob, model=golden_model, allow_engine_mismatch=True) == orig


@pytest.mark.parametrize("name", sorted(MANIFEST["legacy"]))
def test_golden_archive_of_earlier_version_decodes(golden_model, name):
    entry = MANIFEST["legacy"][name]
    blob = open(os.path.join(GOLDEN, f"{name}.llmz"), "rb").read()
    orig = open(os.path.join(GOLDEN, entry["original"]), "rb").read()
    assert ct.scan(blob).version == entry["version"] < ct.VERSION
    assert llmzip.decompress(blob, model=golden_model, allow_engine_mismatch=True) == orig


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
