"""Online mode's bitwise context mixer (codec/bytecm.c via codec/bytecm.py)."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from llmzip.codec import container as ct
from llmzip.codec.bytecm import BitMixer, log_slots
from llmzip.codec.online import compress_online, decompress_online, online_accounting

from conftest import corpus_bytes


def _code(mx: BitMixer, streams: list[bytes], logits=None) -> list[float]:
    """Feed the streams side by side, as online mode does; bits of each step's bytes."""
    bits = []
    for j in range(max(map(len, streams))):
        live = np.array([s for s, b in enumerate(streams) if j < len(b)])
        f = mx.tables(live, None if logits is None else logits(live))
        assert f.shape == (len(live), 256)
        assert (f.sum(axis=1) == 1 << 24).all() and f.min() >= 1
        sym = np.array([streams[s][j] for s in live])
        bits.append(float(sum(24 - math.log2(int(f[r, y])) for r, y in enumerate(sym))))
        mx.update(sym)
    return bits


def test_learns_a_repeating_text_without_the_gpt():
    """A flat GPT: the context, word and match models alone take a repeated text far
    below 8 bits/byte; the first bytes cost about 8."""
    text = b"the cat sat on the mat; the dog sat on the log. " * 30
    bits = _code(BitMixer(1, len(text), len(text), 24), [text])
    assert sum(bits[:8]) / 8 > 6
    assert sum(bits[-480:]) / 480 < 0.4


def test_follows_a_confident_gpt():
    """A GPT that always knows the next byte (random bytes, no context helps): the
    mixer learns to trust it and the cost falls well below 8 bits/byte."""
    rng = np.random.default_rng(0)
    data = bytes(rng.integers(0, 256, 3000, dtype=np.uint8))

    def logits(live):
        out = torch.zeros(len(live), 256)
        out[0, data[len(seen)]] = 8.0          # p(next) ~ 0.92
        return out

    mx, seen, bits = BitMixer(1, len(data), len(data), 24), [], []
    for y in data:
        f = mx.tables(np.array([0]), logits([0]))
        bits.append(24 - math.log2(int(f[0, y])))
        mx.update(np.array([y]))
        seen.append(y)
    assert sum(bits[-1000:]) / 1000 < 1.0


def test_streams_share_tables_and_repeat_exactly():
    """Two mixers fed the same steps give the same tables (no state outside the
    arguments); streams see each other's statistics (a text coded as 4 streams)."""
    text = corpus_bytes("alice29.txt")[:8000]
    parts = [text[i * 2000:(i + 1) * 2000] for i in range(4)]
    a = _code(BitMixer(4, 2000, 8000, 24), parts)
    b = _code(BitMixer(4, 2000, 8000, 24), parts)
    assert a == b
    assert sum(a) / 8000 < 4.5


def _tables_digest(version: int) -> str:
    """SHA-256 of every table of a fixed run: 3 streams of alice29 side by side, a
    synthetic integer GPT (no float anywhere), the mixer of the given version."""
    text = corpus_bytes("alice29.txt")[:6000]
    parts = [text[i * 2000:(i + 1) * 2000] for i in range(3)]
    mx, h, live = BitMixer(3, 2000, 6000, 24, version=version), hashlib.sha256(), np.arange(3)
    for j in range(2000):
        nxt = np.array([p[j] for p in parts])
        gpt = 1 + (np.arange(256)[None, :] * 7919 + j * 31 + live[:, None] * 17) % 1000
        gpt[live, nxt] += 3000 * (j % 5)
        h.update(mx.tables_from(live, gpt.astype(np.int64)).tobytes())
        mx.update(nxt.astype(np.int64))
    return h.hexdigest()


@pytest.mark.parametrize("version, digest", [
    # llmzip 0.9's bytecm.c (commit 1a890f7) gave this: archives with `mixer` 1 decode
    (1, "05558772047dc1d62a552abb85ead54a5470d9b9c721b237967686516a121d21"),
    # version 2 as llmzip 0.11 wrote it (commit 6488bc7)
    (2, "0e747a42987497ff74e4afb8ef36633618db600ca1c99ec011c554bd8968fdd9"),
    # version 3 as llmzip 0.12 wrote it (commit 94bce07)
    (3, "2fafa352edde4ed11c05538f2ae75a144ce9e9950db7794e56144aae821048c5"),
    # version 4 as llmzip 0.13 writes it; any change to its tables is a new version
    (4, "7c7750cc6a396378382024085cdbf7b8db6b5101e3902d255de61d4bd5fcb750"),
])
def test_each_version_keeps_its_tables(version, digest):
    assert _tables_digest(version) == digest


def test_the_layout_context_pays_on_a_play():
    """Version 3's context of the text's layout: in a play (a speech is a paragraph
    whose first line names its speaker, and speakers alternate) the speaker two speeches
    back predicts the name; the context models alone (a flat GPT) code asyoulik.txt's
    first 40 KB smaller than version 2 does, and prose too (the line above, columns)."""
    def cost(name, version):
        text = corpus_bytes(name)[:40000]
        parts = [text[i * 10000:(i + 1) * 10000] for i in range(4)]
        return sum(_code(BitMixer(4, 10000, 40000, 24, version=version), parts)) / 40000
    v2, v3 = cost("asyoulik.txt", 2), cost("asyoulik.txt", 3)
    assert v3 < v2 - 0.01, (v2, v3)           # 2.4104 -> 2.3968
    assert cost("alice29.txt", 3) < cost("alice29.txt", 2)    # 2.2845 -> 2.2774


def test_the_line_and_its_speaker_pay():
    """Version 4's contexts of the line's progress (words and syllables so far: where a
    verse line ends) and of the paragraph's first line (a play's speaker, with the words
    of the speech), and every counter's p in the linear domain too: the context models
    alone code a play, prose and verse smaller than version 3 does."""
    def cost(name, version):
        text = corpus_bytes(name)[:40000]
        parts = [text[i * 10000:(i + 1) * 10000] for i in range(4)]
        return sum(_code(BitMixer(4, 10000, 40000, 24, version=version), parts)) / 40000
    for name in ("asyoulik.txt", "alice29.txt", "plrabn12.txt"):
        v3, v4 = cost(name, 3), cost(name, 4)   # 2.3968 -> 2.3804, 2.2774 -> 2.2600,
        assert v4 < v3 - 0.01, (name, v3, v4)   # 2.6409 -> 2.6220


def test_bad_calls_are_errors():
    mx = BitMixer(2, 3, 6, 24)
    with pytest.raises(ValueError):
        mx.update(np.array([1]))                          # no tables() before
    with pytest.raises(ValueError):
        mx.tables(np.array([2]), None)                    # no stream 2
    mx.tables(np.array([0, 1]), None)
    with pytest.raises(ValueError):
        mx.update(np.array([1, 256]))                     # not a byte
    mx.tables(np.array([0, 1]), None)
    mx.update(np.array([1, 2]))
    for _ in range(2):
        mx.tables(np.array([0]), None)
        mx.update(np.array([7]))
    with pytest.raises(ValueError):                       # stream 0 is full (3 bytes)
        mx.tables(np.array([0]), None)
    assert log_slots(0) == 12 and log_slots(10 ** 9) == 20
    with pytest.raises(ValueError):
        BitMixer(1, 3, 3, 24, version=5)


def test_without_a_compiler_the_error_names_the_mixer(tmp_path, monkeypatch):
    """No C compiler: a typed error that names the mixer (not the attention kernel)."""
    from llmzip.engine.kernels import build
    from llmzip.errors import KernelUnavailableError
    monkeypatch.delitem(build._loaded, "llmzip_bytecm", raising=False)
    monkeypatch.setenv("LLMZIP_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(KernelUnavailableError, match="bitwise context mixer") as e:
        BitMixer(1, 3, 3, 24)
    assert "attention" not in str(e.value) and "install gcc" in str(e.value)


def test_online_round_trip_with_the_bitwise_mixer():
    data = corpus_bytes("alice29.txt")[:6000]
    old = compress_online(data, config={"preset": "xs", "mixer": 0}, fallback=False)
    v1 = compress_online(data, config={"preset": "xs", "mixer": 1}, fallback=False)
    new = compress_online(data, preset="xs", fallback=False)
    assert ct.scan(new).header["online"]["config"]["mixer"] == 4
    assert decompress_online(new) == data
    assert decompress_online(v1) == data                  # llmzip 0.9 and 0.10's mixer
    # archives of llmzip 0.5 .. 0.8 have no "mixer" key: they mean the 0.5 mixer
    info = ct.scan(old)
    header = json.loads(json.dumps(info.header))
    del header["online"]["config"]["mixer"]
    head = len(ct.header_bytes(info.header, info.version))
    assert decompress_online(ct.header_bytes(header, info.version) + old[head:]) == data
    acc = online_accounting(new)
    assert acc["payload_bits"] <= acc["ideal_bits"] * 1.005
    assert len(new) < len(old)
