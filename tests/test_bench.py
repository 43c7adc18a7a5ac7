"""llmzip.tools.bench: run_bench outputs and resume, failure recording, run_cli, core_benchmark."""

import argparse
import csv
import json
import os

import pytest

from llmzip.errors import UsageError
from llmzip.tools import baselines as bl
from llmzip.tools import bench, benchreport, corebench
from conftest import corpus_bytes


@pytest.fixture
def two_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.txt").write_bytes(corpus_bytes("alice29.txt", 1500))
    (d / "b.bin").write_bytes(bytes(range(256)) * 3)
    return d


class WrongBytes(bl.Codec):
    """Test double: decompress returns the wrong bytes."""
    name, label = "wrong-bytes", "wrong"

    def _compress(self, data):
        return data

    def _decompress(self, blob):
        return blob[:-1] + b"?"


class Explodes(bl.Codec):
    """Test double: compress raises."""
    name = "explodes"

    def _compress(self, data):
        raise ValueError("boom")


class Counting(bl.Codec):
    """Test double: counts calls (to prove resume computes nothing)."""
    name = "counting"
    calls = 0

    def _compress(self, data):
        Counting.calls += 1
        return data[::-1]

    def _decompress(self, blob):
        return blob[::-1]


def test_expand_paths(two_files, tmp_path):
    files = bench.expand_paths([str(two_files), str(two_files / "a.txt")])
    assert [os.path.basename(f) for f in files] == ["a.txt", "b.bin"]
    with pytest.raises(FileNotFoundError):
        bench.expand_paths([str(tmp_path / "nope")])


def test_run_bench_writes_outputs(two_files, tmp_path):
    out = tmp_path / "out"
    codecs = [bl.get_codec("gzip-9"), bl.get_codec("xz-9e"), "zstd-19"]
    rows = bench.run_bench([str(two_files)], codecs, out_dir=str(out), progress=False,
                           min_seconds=0)
    assert len(rows) == 6
    for r in rows:
        assert r["round_trip"] is True and r["error"] is None
        assert r["compressed_bytes"] > 0
        assert r["bits_per_byte"] == pytest.approx(8 * r["compressed_bytes"]
                                                   / r["original_bytes"])
        assert r["compress_bytes_per_s"] > 0 and r["decompress_bytes_per_s"] > 0
    for name in ("results.jsonl", "results.csv", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0, name
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(x)["key"] for x in lines)
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    md = (out / "results.md").read_text()
    assert "| a.txt |" in md and "xz -9e" in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = benchreport.format_table(rows)
    assert "TOTAL" in table and "gzip -9" in table


def test_run_bench_resume_skips_finished_cells(two_files, tmp_path):
    out = tmp_path / "out"
    extra = tmp_path / "extra.jsonl"
    Counting.calls = 0
    rows1 = bench.run_bench([str(two_files)], [Counting()], out_dir=str(out),
                            progress=False, jsonl=str(extra), min_seconds=0)
    assert Counting.calls == 2 and all(r["round_trip"] for r in rows1)
    rows2 = bench.run_bench([str(two_files)], [Counting()], out_dir=str(out),
                            progress=False, min_seconds=0)
    assert Counting.calls == 2                        # nothing computed again
    assert all(r.get("resumed") for r in rows2)
    assert [r["compressed_bytes"] for r in rows2] == [r["compressed_bytes"] for r in rows1]
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    assert len(extra.read_text().splitlines()) == 2
    # a changed file is a new cell; resume=False recomputes everything
    (two_files / "b.bin").write_bytes(b"changed")
    bench.run_bench([str(two_files)], [Counting()], out_dir=str(out), progress=False,
                    min_seconds=0)
    assert Counting.calls == 3
    bench.run_bench([str(two_files)], [Counting()], out_dir=str(out), progress=False,
                    resume=False, min_seconds=0)
    assert Counting.calls == 5


def test_run_bench_resume_tolerates_torn_jsonl(two_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"key": "x", "codec": "gz')      # torn line
    rows = bench.run_bench([str(two_files / "a.txt")], ["gzip-9"], out_dir=str(out),
                           progress=False, min_seconds=0)
    assert rows[0]["round_trip"]
    assert bench.load_jsonl(str(out / "results.jsonl"))[-1]["codec"] == "gzip-9"


def test_run_bench_records_failures(two_files, tmp_path):
    rows = bench.run_bench([str(two_files / "a.txt")], [WrongBytes(), Explodes(), "gzip-9"],
                           out_dir=str(tmp_path / "o"), progress=False, min_seconds=0)
    by = {r["codec"]: r for r in rows}
    assert by["wrong-bytes"]["round_trip"] is False
    assert "mismatch" in by["wrong-bytes"]["error"]
    assert by["explodes"]["round_trip"] is False
    assert "boom" in by["explodes"]["error"] and by["explodes"]["compressed_bytes"] is None
    assert by["gzip-9"]["round_trip"] is True
    assert "FAIL" in benchreport.format_table(rows)
    assert "## Failures" in (tmp_path / "o" / "results.md").read_text()


def test_run_bench_unavailable_codec_not_recorded(two_files, tmp_path):
    u = bl.UnavailableCodec("zpaq-5", "not installed")
    rows = bench.run_bench([str(two_files / "a.txt")], [u], out_dir=str(tmp_path / "o"),
                           progress=False)
    assert rows[0]["error"] == "unavailable: not installed"
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_run_bench_llmzip_codec_records_model_fields(two_files, tiny_gguf, tmp_path):
    (two_files / "a.txt").write_bytes(corpus_bytes("alice29.txt", 300))
    c = bl.LlmzipCodec(tiny_gguf, batch=2, seg_len=64, fallback=False, threads=1)
    rows = bench.run_bench([str(two_files / "a.txt")], [c, "xz-9e"],
                           out_dir=str(tmp_path / "o"), progress=False, min_seconds=0)
    r = rows[0]
    assert r["round_trip"] is True and r["kind"] == "llm"
    assert r["ideal_bits_per_byte"] > 0 and r["model_tokens"] > 0
    assert r["model_load_seconds"] >= 0
    assert (r["engine"], r["threads"], r["batch"], r["seg_len"]) == ("exact", 1, 2, 64)
    lines = bench.summary_lines(rows)
    assert len(lines) == 1 and "a.txt: llmzip-tiny" in lines[0] and "xz -9e" in lines[0]


def test_run_cli(two_files, tiny_gguf, tmp_path, capsys, monkeypatch):
    (two_files / "a.txt").write_bytes(b"hello there, the cat sat. " * 8)
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(input=[str(two_files / "a.txt")], json=str(tmp_path / "r.jsonl"),
                              model=tiny_gguf, threads=1, batch=2, seg_len=64,
                              engine="float", dtype="float32", memory_limit=1 << 30, quiet=True,
                              verbose=False)
    assert bench.run_cli(args) == 0
    out = capsys.readouterr().out
    assert "llmzip tiny" in out and "xz -9e" in out and "a.txt: llmzip-tiny" in out
    rows = bench.load_jsonl(str(tmp_path / "r.jsonl"))
    assert {r["codec"] for r in rows} >= {"xz-9e", "gzip-9", "llmzip-tiny"}
    assert (tmp_path / bench.DEFAULT_OUT_DIR / "results.png").exists()


def test_run_cli_passes_the_level_and_its_overrides(two_files, tiny_gguf, tmp_path):
    """`llmzip bench --level N --window W ... --adapt ...` benchmarks that configuration,
    and the cell's key tells it from the default's."""
    (two_files / "a.txt").write_bytes(corpus_bytes("alice29.txt", 1500))
    args = argparse.Namespace(input=[str(two_files / "a.txt")], json=str(tmp_path / "r.jsonl"),
                              out=str(tmp_path / "o"), codecs="llmzip", model=tiny_gguf,
                              threads=1, batch=2, seg_len=400, level=1, window=64, stride=16,
                              slide="shift", adapt="bias=3000", quiet=True, verbose=False)
    assert bench.run_cli(args) == 0
    (row,) = bench.load_jsonl(str(tmp_path / "r.jsonl"))
    assert row["round_trip"] is True
    assert (row["params"]["window"], row["params"]["slide"], row["params"]["adapt"]) == (
        64, "shift", {"bias": 3000})


def test_run_cli_report_joins_separate_runs(two_files, tmp_path, capsys):
    out = str(tmp_path / "o")

    def args(files, **kw):
        base = dict(input=files, json=None, out=out, model=None, threads=1, batch=2,
                    seg_len=None, dtype="float32", memory_limit=None, quiet=True,
                    verbose=False, codecs=None, report=False)
        return argparse.Namespace(**{**base, **kw})
    a, b = str(two_files / "a.txt"), str(two_files / "b.bin")
    assert bench.run_cli(args([a, b], codecs="gzip-9")) == 0      # one codec, both files
    assert bench.run_cli(args([a], codecs="xz-9e")) == 0          # another, one file
    capsys.readouterr()
    assert bench.run_cli(args([a, b], report=True)) == 0
    table = capsys.readouterr().out
    assert "gzip -9" in table and "xz -9e" in table
    total = next(line for line in table.splitlines() if line.startswith("TOTAL"))
    assert total.count("*") == 1            # xz ran on one of the two files only
    rows = bench.recorded_rows([a, b], out)
    assert [(r["file"], r["codec"]) for r in rows] == [
        ("a.txt", "gzip-9"), ("a.txt", "xz-9e"), ("b.bin", "gzip-9")]
    assert (tmp_path / "o" / "results.md").read_text().count("xz -9e") >= 1
    with pytest.raises(UsageError):
        bench.run_cli(args([str(two_files / "c.txt")], report=True))


def test_core_benchmark(tiny_model, tmp_path):
    p = tmp_path / "small.txt"
    p.write_bytes(corpus_bytes("alice29.txt", 400))
    r = corebench.core_benchmark(str(p), model=tiny_model, threads=1, batch=2, seg_len=64,
                             fallback=False, peak_seconds=0.05, square=256)
    assert r["round_trip"] is True
    assert r["original_bytes"] == 400 and r["archive_bytes"] > 0
    assert r["bits_per_byte"] == pytest.approx(8 * r["archive_bytes"] / 400)
    assert 0 < r["ideal_bits_per_byte"] < 32
    assert r["compress_bytes_per_s"] > 0 and r["decompress_bytes_per_s"] > 0
    assert r["model_load_seconds"] >= 0
    assert r["xz_bytes"] > 0 and r["xz_bits_per_byte"] > 0
    assert r["tokens"] > 0 and r["n_params"] == tiny_model.config.n_params()
    assert len(r["matmul_gflops"]) == 3 and all(v > 0 for v in r["matmul_gflops"].values())
    assert r["peak_gflops"] == max(r["matmul_gflops"].values())
    assert r["model_gflops_compress"] == pytest.approx(
        2 * r["n_params"] * r["tokens"] / r["compress_seconds"] / 1e9)
    assert 0 < r["share_of_peak_compress"] < 1
    from llmzip.engine.float_engine import resolve_dtype          # the float engine's bench
    assert (r["dtype"], r["threads"], r["batch"], r["seg_len"]) == (resolve_dtype("auto"), 1,
                                                                   2, 64)
    json.dumps(r)                                     # JSON-serialisable as is
    block = corebench.format_core(r)
    assert "bits/byte" in block and "xz -9e" in block and "GFLOP/s" in block


def test_matmul_peak():
    r = corebench.matmul_peak({"sq": (64, 64, 64)}, "float32", 1, min_seconds=0.01)
    assert r["sq"] > 0
