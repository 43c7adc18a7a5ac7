"""Online mode's byte context models and llmzip 0.5's mixer (codec/bytemix.py; presets use
the bitwise context mixer since 0.9, tests/test_bytecm.py)."""

import json
import math

import numpy as np
import pytest
import torch

from llmzip.codec import container as ct
from llmzip.codec.bytecm import VERSION, VERSIONS
from llmzip.codec.bytemix import P_FRAC, ByteContexts, ByteMixer, ilog2
from llmzip.codec.online import (MIX, compress_online, decompress_online, online_accounting,
                                 resolve_config)
from llmzip.errors import FormatError, UsageError

from conftest import corpus_bytes


def test_ilog2_close_to_log2():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.arange(1, 5000), rng.integers(1, 1 << 62, 20000),
                        np.array([1 << k for k in range(62)])]).astype(np.int64)
    got = ilog2(x) / 1024
    want = np.array([math.log2(int(v)) for v in x])
    assert np.all(np.abs(got - want) < 2.5 / 1024)
    assert ilog2(np.array([1, 2, 1024], dtype=np.int64)).tolist() == [0, 1024, 10240]


def _probs(m: ByteContexts, s: int) -> np.ndarray:
    return np.exp2(m.predict(s) / 1024.0)


def test_contexts_blend_and_exclusion():
    m = ByteContexts(2, 3)
    for y in b"abcabcabcab":
        m.update(0, y)
    p = _probs(m, 0)
    assert 0.98 < p.sum() < 1.001             # floor division loses a little mass
    assert int(np.argmax(p)) == ord("c")      # after "ab" came "c" every time
    assert p[ord("c")] > 0.5
    # stream 1 shares the counts but not the history: nothing seen yet -> order 0 only
    p1 = _probs(m, 1)
    assert np.allclose(p1, m.uni / m.uni.sum(), rtol=0.01)
    assert m.uni[ord("a")] == 3 and m.uni[ord("b")] == 2  # b's second time: order 1 knew it
    # exclusion: "c" after "b" (order 1) counted only the first time, when order 2 and 3
    # had not seen it either
    n, succ = m.counts[0][b"b"]
    assert succ == {ord("c"): 1} and n == 1
    assert m.counts[2][b"abc"] == [3, {ord("a"): 3}]      # the highest order counts always


def test_contexts_large_counts_do_not_overflow():
    m = ByteContexts(1, 1)
    m.counts[0][b"x"] = [(1 << 26), {ord("y"): (1 << 26) - 1, ord("z"): 1}]
    m.hist[0].extend(b"x")
    p = _probs(m, 0)
    assert p[ord("y")] > 0.99 and 0.99 < p.sum() <= 1.0 + 1e-9
    assert np.all(m.predict(0) < 1024) and np.all(m.predict(0) >= -64 * 1024)
    assert (1 << P_FRAC) * 10 * (1 << 26) < 1 << 63


def test_mixer_learns_to_trust_the_contexts():
    """A GPT that knows nothing (uniform logits) on a repeating text: the mixer moves
    weight to the context models and the code length falls far below 8 bits/byte."""
    text = b"the cat sat on the mat. " * 40
    mx = ByteMixer(1, 1 << 16, 4, 6554, 24)
    bits = []
    for y in text:
        f = mx.tables(np.array([0]), torch.zeros(1, 256))
        assert f.shape == (1, 256) and int(f.sum()) == 1 << 24 and f.min() >= 1
        bits.append(24 - math.log2(int(f[0, y])))
        mx.update(np.array([y]))
    assert mx.w[1] > 0
    assert sum(bits[-240:]) / 240 < 0.5 and sum(bits[:24]) / 24 > 5


def test_online_mix_round_trip_and_gain():
    data = corpus_bytes("alice29.txt")[:6000]
    plain = compress_online(data, config={"preset": "xs", "mix": 0}, fallback=False)
    mixed = compress_online(data, config={"preset": "xs", "mix": 33554, "mix_match": 6554,
                                          "mixer": 0}, fallback=False)
    assert decompress_online(mixed) == data
    cfg = ct.scan(mixed).header["online"]["config"]
    assert cfg["mix"] == 33554 and cfg["mix_order"] == 6
    # the tiny GPT alone is near 5 bits/byte on 6 KB; the context models help a lot
    assert len(mixed) < 0.9 * len(plain)
    acc = online_accounting(mixed)
    assert acc["payload_bits"] <= acc["ideal_bits"] * 1.005
    assert acc["mix"] == 33554 and acc["ideal_bits"] < 0.9 * acc["loss_bits"]
    assert acc["mixer"] == 0 and online_accounting(plain)["mix"] == 0


def test_archive_without_mix_keys_decodes_as_before():
    """Archives of llmzip <= 0.4 have no mix keys: they mean the GPT alone."""
    data = corpus_bytes("alice29.txt")[:3000]
    blob = compress_online(data, config={"preset": "xs", "mix": 0}, fallback=False)
    info = ct.scan(blob)
    old = len(ct.header_bytes(info.header, info.version))
    header = json.loads(json.dumps(info.header))
    for k in ("mix", "mix_order", "mix_match", "mixer"):
        del header["online"]["config"][k]
    assert decompress_online(ct.header_bytes(header, info.version) + blob[old:]) == data
    header["online"]["config"]["mix"] = -1
    with pytest.raises(FormatError):
        decompress_online(ct.header_bytes(header, info.version) + blob[old:])


def test_mix_config_errors():
    for bad in ({"mix": -1}, {"mix_order": 0}, {"mix_match": 1 << 30}, {"mix": 1.5},
                {"mixer": max(VERSIONS) + 1}):
        with pytest.raises(UsageError):
            resolve_config(config={"preset": "xs", **bad})


def test_context_limit_bounds_memory(monkeypatch):
    """Past CONTEXT_LIMIT no new contexts (or match positions) are kept, on both sides
    alike: the round trip stays exact."""
    import llmzip.codec.bytemix as bm
    monkeypatch.setattr(bm, "CONTEXT_LIMIT", 300)
    m = bm.ByteContexts(1, 6)
    rng = np.random.default_rng(1)
    for y in rng.integers(0, 256, 2000):
        m.update(0, int(y))
    assert m.n_ctx == 300 == sum(len(c) for c in m.counts)
    mx = bm.ByteMixer(1, 1 << 15, 6, 6554, 24)
    for y in rng.integers(0, 256, 1000):
        mx.tables(np.array([0]), torch.zeros(1, 256))
        mx.update(np.array([y]))
    assert len(mx.match.index) == 300
    data = bytes(rng.integers(0, 256, 3000, dtype=np.uint8)) + corpus_bytes("alice29.txt")[:3000]
    blob = compress_online(data, config={"preset": "xs", **MIX, "mixer": 0}, fallback=False)
    assert decompress_online(blob) == data


def test_cli_online_info_shows_the_mix(tmp_path, capsys):
    from llmzip.cli import main
    src = tmp_path / "a.txt"
    src.write_bytes(corpus_bytes("alice29.txt")[:2500])
    arc = tmp_path / "a.llmz"
    assert main(["compress", "--mode", "online", "--preset", "xs", "-q", str(src),
                 "-o", str(arc)]) == 0
    capsys.readouterr()
    assert main(["info", str(arc)]) == 0
    out = capsys.readouterr().out
    assert "mode online" in out
    assert f"(bitwise context mixing, version {VERSION}); the GPT alone:" in out
    assert main(["decompress", "-q", str(arc), "-o", str(tmp_path / "b.txt")]) == 0
    assert (tmp_path / "b.txt").read_bytes() == src.read_bytes()
