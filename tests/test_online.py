"""Online mode: exact round trips, fallback, determinism checks, accounting, scale smoke."""

import json
import os
import subprocess
import sys

import pytest

from llmzip.codec import container as ct
from llmzip.codec.online import (METHOD_ONLINE, PRESETS, compress_online, decompress_online,
                                 online_accounting, plot_loss_curve, resolve_config)
from llmzip.errors import (ArchiveError, ChecksumError, EngineMismatchError, FormatError,
                           UsageError)

from conftest import corpus_bytes

TINY = "xs"


@pytest.fixture(scope="module")
def text_archive():
    data = corpus_bytes("alice29.txt")[10_000:12_500]
    return data, compress_online(data, preset=TINY, fallback=False)


def _rebuild(blob: bytes, edit) -> bytes:
    """The same archive with its header JSON changed by edit(header)."""
    info = ct.scan(blob)
    old = len(ct.header_bytes(info.header, info.version))
    header = json.loads(json.dumps(info.header))
    edit(header)
    return ct.header_bytes(header, info.version) + blob[old:]


@pytest.mark.parametrize("data", [b"", b"x"], ids=["empty", "one-byte"])
def test_round_trip_trivial(data):
    blob = compress_online(data, preset=TINY)
    assert decompress_online(blob) == data
    assert len(blob) < 512


def test_one_byte_online_chunk():
    blob = compress_online(b"x", preset=TINY, fallback=False)
    assert [c.method for c in ct.scan(blob).chunks] == [METHOD_ONLINE]
    assert decompress_online(blob) == b"x"


def test_random_bytes_do_not_grow():
    data = os.urandom(5000)
    blob = compress_online(data, preset=TINY)
    assert decompress_online(blob) == data
    assert len(blob) <= len(data) + 512          # stored chunk + header/footer
    assert [c.method_name for c in ct.scan(blob).chunks] == ["stored"]


def test_text_round_trip_online(text_archive):
    data, blob = text_archive
    assert [c.method for c in ct.scan(blob).chunks] == [METHOD_ONLINE]
    assert decompress_online(blob) == data
    acc = online_accounting(blob)
    assert acc["online_bytes"] == len(data)
    assert acc["payload_bits"] >= acc["ideal_bits"] > 0
    # loss_bits is the GPT's own float loss: the context models mixed in beat it
    assert acc["ideal_bits"] < 0.95 * acc["loss_bits"]


def test_gpt_alone_tables_match_float_loss(text_archive):
    """With mix 0 the integer tables are the float model's softmax: the code length
    equals the training loss within 0.1%."""
    data = text_archive[0]
    blob = compress_online(data, config={"preset": TINY, "mix": 0}, fallback=False)
    acc = online_accounting(blob)
    assert abs(acc["loss_bits"] / acc["ideal_bits"] - 1) < 1e-3
    assert decompress_online(blob) == data


def test_decode_in_fresh_process(text_archive, tmp_path):
    data, blob = text_archive
    src, dst = tmp_path / "a.llmz", tmp_path / "out"
    src.write_bytes(blob)
    code = ("import sys; from llmzip.codec.online import decompress_online; "
            "open(sys.argv[2], 'wb').write(decompress_online(open(sys.argv[1], 'rb').read()))")
    subprocess.run([sys.executable, "-c", code, str(src), str(dst)], check=True, timeout=120)
    assert dst.read_bytes() == data


def test_other_thread_count_refused_or_exact(text_archive):
    data, blob = text_archive
    with pytest.raises(EngineMismatchError):
        decompress_online(blob, threads=2)
    try:                                         # overridden: exact, or a typed error
        assert decompress_online(blob, threads=2, allow_engine_mismatch=True) == data
    except ArchiveError:
        pass


def test_engine_mismatch_refused_and_overridable(text_archive):
    data, blob = text_archive

    def edit(h):
        h["engine"]["torch"] = "0.0.1"
    other = _rebuild(blob, edit)
    with pytest.raises(EngineMismatchError) as e:
        decompress_online(other)
    assert e.value.field == "torch"
    assert decompress_online(other, allow_engine_mismatch=True) == data


def test_corrupt_payload_is_a_typed_error(text_archive):
    _, blob = text_archive
    c = ct.scan(blob).chunks[0]
    bad = bytearray(blob)
    bad[c.offset + 5] ^= 0x40
    with pytest.raises(ChecksumError):
        decompress_online(bytes(bad))
    with pytest.raises(FormatError):
        decompress_online(blob[:-3])


def test_bad_header_config_is_format_error(text_archive):
    _, blob = text_archive
    for edit in (lambda h: h["online"]["config"].update(n_layer=10**6),
                 lambda h: h["online"]["config"].update(bogus=1),
                 lambda h: h["online"].update(seed="x"),
                 lambda h: h.update(mode="prior")):
        with pytest.raises(FormatError):
            decompress_online(_rebuild(blob, edit))


def test_payload_matches_summed_losses():
    """~20 KB of text: the range coder spends within 0.5% of the ideal code length."""
    data = corpus_bytes("alice29.txt")[:20_000]
    blob = compress_online(data, preset=TINY, fallback=False)
    acc = online_accounting(blob)
    assert acc["payload_bits"] <= acc["ideal_bits"] * 1.005
    assert decompress_online(blob) == data


@pytest.mark.slow
def test_payload_matches_summed_losses_large():
    data = corpus_bytes("alice29.txt")
    blob = compress_online(data, preset="s")
    acc = online_accounting(blob)
    assert acc["chunks"] == ["online"]
    assert acc["payload_bits"] <= acc["ideal_bits"] * 1.005
    assert 8 * acc["archive_bytes"] < 1.01 * acc["ideal_bits"] + 8 * 2048
    assert decompress_online(blob) == data


def test_config_file_and_errors(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"preset": "xs", "streams": 2, "lr": 0.02}))
    name, cfg = resolve_config(config=str(path))
    assert name == "custom" and cfg.streams == 2 and cfg.n_layer == PRESETS["xs"].n_layer
    data = b"hello hello hello hello " * 20
    blob = compress_online(data, config=str(path), fallback=False)
    assert decompress_online(blob) == data
    assert json.loads(json.dumps(ct.scan(blob).header))["online"]["config"]["streams"] == 2
    with pytest.raises(UsageError):
        resolve_config("nope")
    with pytest.raises(UsageError):
        resolve_config(config={"n_head": 3, "n_embd": 64})
    with pytest.raises(UsageError):
        resolve_config(config={"lr": "fast"})
    with pytest.raises(UsageError):
        resolve_config(config=str(tmp_path / "missing.json"))


def test_presets_are_ordered_by_size():
    sizes = [cfg.n_params() for cfg in PRESETS.values()]
    assert sizes == sorted(sizes) and sizes[-1] >= 30 * sizes[0]


def test_loss_curve_plot(text_archive, tmp_path):
    pytest.importorskip("matplotlib")
    _, blob = text_archive
    path = plot_loss_curve(blob, str(tmp_path / "curve.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_scale_smoke(tmp_path):
    pytest.importorskip("scipy")
    from llmzip.tools import scale
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(corpus_bytes("alice29.txt", 6000))
    out = tmp_path / "rows.jsonl"
    rows = scale.run_sweep(str(corpus), ["1K", 2048, "3K"], ["xs", "s"], str(out), log=None)
    assert len(rows) == 6 and len(out.read_text().splitlines()) == 6
    assert all(r.get("round_trip") for r in rows)
    again = scale.run_sweep(str(corpus), ["1K", 2048, "3K"], ["xs", "s"], str(out), log=None)
    assert len(again) == 6 and len(out.read_text().splitlines()) == 6   # resumed: no new rows
    fit = scale.fit_law(rows)
    assert "ok" in fit
    if fit["ok"]:
        assert all(k + "_err" in fit for k in scale.FIT_NAMES)
    assert scale.main(["--out", str(out), "--no-run", "--plots", str(tmp_path)]) == 0
    assert (tmp_path / "scale_bpb_vs_params.png").exists()
    assert (tmp_path / "scale_bpb_vs_data.png").exists()


def test_cli_scale(tmp_path, capsys):
    """`llmzip scale`: a run adds rows (resumed afterwards), then fits and plots;
    bad arguments are refused with exit code 1 and a message."""
    pytest.importorskip("scipy")
    from llmzip import cli
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(corpus_bytes("alice29.txt", 3000))
    out = tmp_path / "rows.jsonl"
    args = ["scale", "--corpus", str(corpus), "--sizes", "1K,2K", "--presets", "xs",
            "--out", str(out), "--fit-json", str(tmp_path / "fit.json"), "-q"]
    assert cli.main(args) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "no fit: need at least 6 runs" in capsys.readouterr().out
    assert json.loads((tmp_path / "fit.json").read_text())["ok"] is False
    assert cli.main(args) == 0 and len(out.read_text().splitlines()) == 2      # resumed
    assert cli.main(args[:-1] + ["--presets", "nope"]) == 1
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert cli.main(["scale", "--corpus", str(corpus), "--sizes", "10K", "--presets", "xs",
                     "--out", str(out)]) == 1
    assert "fewer than" in capsys.readouterr().err
