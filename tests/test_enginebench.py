"""llmzip.tools.enginebench and scripts/bench_engine.py on the tiny random model: rows are
well formed, round trips are verified, the MAC count matches a hand count, the reports are
written. No timing assertions (machines are noisy)."""

import importlib.util
import json
import os

import pytest

from llmzip.tools import enginebench as eb

ROOT = os.path.join(os.path.dirname(__file__), "..")
TEXT = (b"Alice was beginning to get very tired of sitting by her sister on the bank, "
        b"and of having nothing to do: once or twice she had peeped into the book her "
        b"sister was reading, but it had no pictures or conversations in it, 'and what "
        b"is the use of a book,' thought Alice 'without pictures or conversations?'\n") * 2


@pytest.fixture(scope="module")
def handles(tiny_model):
    # fallback=False: the random model loses to zstd, and the rows should use the model
    return {e: eb.EngineHandle(e, tiny_model, fallback=False, batch=4, seg_len=64)
            for e in ("float", "exact")}


def test_macs_per_token_hand_count(tiny_model):
    cfg = tiny_model.config        # tiny.py: C=32, H=4, K=2, D=8, F=64, 2 layers
    assert (cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.ffn_hidden,
            cfg.n_layer) == (32, 4, 2, 8, 64, 2)
    V = cfg.vocab_size
    assert V == 3 + 253 + 20       # control tokens, bytes less the 3 missing, merges
    m = eb.macs_per_token(cfg)
    # qkv (4+2*2)*8 x 32 = 2048, o 32 x 32 = 1024, gate+up 2*64 x 32 = 4096, down 32 x 64
    assert m["layer"] == {"qkv": 2048, "o": 1024, "gate_up": 4096, "down": 2048}
    assert m["per_layer"] == 9216 and m["layers"] == 18432
    assert m["output"] == V * 32 == 8832
    assert m["total"] == 27264 and m["ops"] == 54528


def test_macs_match_the_integer_weights(tiny_model):
    from llmzip.engine.exact.engine import int_model
    im = int_model(tiny_model)
    nk = sum(lin.w.shape[0] * lin.w.shape[1]
             for L in im.layers for lin in (L.qkv, L.o, L.gate_up, L.down))
    m = eb.macs_per_token(tiny_model.config)
    assert nk == m["layers"]
    assert im.head.w.numel() == m["output"]


def test_attention_ops_hand_count(tiny_model):
    # segments of 3 and 1 tokens: contexts 1+2+3 and 1 per layer, 2 layers, 4 H D = 128
    assert eb.attention_ops(tiny_model.config, [3, 1]) == 128 * 7 * 2
    from llmzip.engine.models.gemma import GemmaConfig
    g = GemmaConfig(n_layer=2, n_head=1, head_dim=1, sliding_window=2,
                    sliding_layers=(True, False))
    # 4 tokens: sliding layer 1+2+2+2 = 7, global layer 1+2+3+4 = 10
    assert eb.attention_ops(g, [4]) == 4 * (7 + 10)
    assert sum(eb.segment_lengths(300, 64, 4)) == 300


def test_machine_info():
    m = eb.machine_info()
    assert m["cpu"] and m["cores"] >= 1 and m["torch"]
    assert set(m["flags"]) == set(eb.FLAGS)


def test_load_is_reported_apart(handles):
    for name, h in handles.items():
        assert h.load["engine"] == name and h.load["warmup_round_trip"] == "OK"
        assert h.load["load_seconds"] >= h.load["warmup_seconds"] >= 0


def test_compare_rows(handles):
    s = eb.compare(handles, TEXT, "text")
    assert [r["engine"] for r in s["rows"]] == ["float", "exact"]
    for r in s["rows"]:
        assert r["round_trip"] == "OK" and r["error"] is None
        assert r["bytes"] == len(TEXT) and r["archive_bytes"] > 0 and r["tokens"] > 0
        assert r["bits_per_byte"] == pytest.approx(8 * r["archive_bytes"] / len(TEXT))
        assert 0 < r["ideal_bits_per_byte"] <= r["bits_per_byte"]
        assert r["compress_bytes_per_s"] > 0 and r["decompress_bytes_per_s"] > 0
        assert r["threads_compress"] and r["threads_decompress"]
        assert r["chunks"] == {"model": r["chunks"]["model"]}
    exact = s["rows"][1]
    from llmzip.engine.exact.kernels import supported_paths
    assert exact["kernel"] in supported_paths() + ["reference"]
    assert s["compress_speedup"] > 0 and s["decompress_speedup"] > 0


def test_a_bad_round_trip_says_fail(handles):
    h = handles["exact"]
    good = h.compressor.compress
    h.compressor.compress = lambda data: good(data + b"!")   # decodes to other bytes
    try:
        r = h.round_trip(TEXT[:100])
    finally:
        h.compressor.compress = good
    assert r["round_trip"] == "FAIL"


def test_gops_row(handles):
    row = handles["exact"].round_trip(TEXT)
    g = eb.gops(handles["exact"], row, shape=(64, 128, 96), min_seconds=0.01)
    assert g["tokens"] == row["tokens"]
    assert g["linear_ops"] == g["macs_per_token"]["ops"] * row["tokens"]
    assert g["attention_ops"] > 0 and g["achieved_gops_with_attention"] > g["achieved_gops"] > 0
    assert g["peaks"] and all(p["int_gops"] > 0 and p["fp32_gflops"] > 0 for p in g["peaks"])
    assert g["peak_int_gops"] > 0 and 0 < g["share_of_int_peak"]


def test_under_load_rows(handles):
    u = eb.under_load({"exact": handles["exact"]}, TEXT[:200], settle=0.05)
    (r,) = u["rows"]
    assert r["round_trip"] == "OK" and r["quiet"]["round_trip"] == r["loaded"]["round_trip"]
    assert r["compress_ratio"] > 0 and r["decompress_ratio"] > 0


def test_reports(handles, tmp_path):
    res = {"machine": eb.machine_info(), "load": {k: h.load for k, h in handles.items()},
           "file": eb.compare(handles, TEXT, "text"),
           "sample": eb.compare(handles, TEXT[:150], "sample")}
    text = "\n".join(eb.render_text(*t) for t in eb.tables(res))
    assert "exact over float, compress" in text and "round trip" in text
    paths = eb.write_reports(res, str(tmp_path / "out"))
    assert [os.path.basename(p) for p in paths] == ["engine.json", "engine.md", "engine.png"]
    with open(paths[0]) as f:
        assert json.load(f)["file"]["rows"][0]["engine"] == "float"
    with open(paths[1]) as f:
        md = f.read()
    assert "| engine | bytes |" in md and "|---|---:|" in md
    with open(paths[2], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_script(tiny_gguf, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_engine", os.path.join(ROOT, "scripts", "bench_engine.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = tmp_path / "in.txt"
    src.write_bytes(TEXT)
    out = tmp_path / "res"
    rc = mod.main(["--file", str(src), "--model", tiny_gguf, "--sample-bytes", "120",
                   "--gemm", "32,64,48", "--out", str(out), "-q"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "Beside one busy process" in printed.out and printed.err == ""
    res = json.loads((out / "engine.json").read_text())
    assert {"machine", "load", "file", "sample", "gops", "under_load"} <= set(res)
    assert (out / "engine.md").exists() and (out / "engine.png").exists()
    # one section alone: the GEMM section compresses the file itself
    rc = mod.main(["--file", str(src), "--model", tiny_gguf, "--sections", "gops",
                   "--gemm", "32,64,48", "--out", str(out), "-q"])
    assert rc == 0
    res = json.loads((out / "engine.json").read_text())
    assert res["gops"]["row"]["round_trip"] == "OK" and "file" not in res
