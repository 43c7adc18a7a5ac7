"""Round trips through llmzip.compress/decompress with a tiny random model."""

import os
import subprocess
import sys

import pytest

import llmzip
from llmzip.codec import container as ct
from llmzip.codec.classical import best_classical
from llmzip.codec.lockstep import decode_segments, encode_segments
from llmzip.codec.tokenizer import tokenizer_for
from conftest import corpus_bytes

CASES = {
    "empty": b"",
    "one_byte": b"x",
    "all_256": bytes(range(256)),
    "invalid_utf8": b"caf\xe9 \xc0\xff\xfe broken \xed\xa0\x80 bytes" * 20,
    "chinese_emoji": ("压缩就是理解。😀 " * 40).encode(),
    "random": os.urandom(5000),
    "long_repeat": b"abcabcabd" * 3000,
    "canterbury": corpus_bytes("alice29.txt", 12000),
    "nul_text_mix": b"text " * 500 + bytes(3000) + b" more text" * 500,
}


@pytest.mark.parametrize("name", CASES)
def test_compress_decompress_round_trip(tiny_model, name):
    data = CASES[name]
    blob = llmzip.compress(data, model=tiny_model, batch=4, seg_len=200)
    assert blob[:8] == ct.MAGIC
    assert llmzip.decompress(blob, model=tiny_model) == data
    # the same through the model path only (no zstd fallback)
    blob = llmzip.compress(data, model=tiny_model, batch=4, seg_len=200, fallback=False)
    assert llmzip.decompress(blob, model=tiny_model) == data


def test_model_chunks_used_and_segments(tiny_model):
    data = corpus_bytes("alice29.txt", 3000)
    c = llmzip.Compressor(tiny_model, batch=3, seg_len=100)
    blob = c.compress(data)
    # the random tiny model may lose to zstd; force-check the engine path directly
    tok = tokenizer_for(tiny_model)
    ids = tok.encode(data)
    segs = [ids[:100], ids[100:180], ids[180:181]]
    words, bits = encode_segments(c.engine, segs)
    out = decode_segments(c.engine, [len(s) for s in segs], words)
    assert all((a == b).all() for a, b in zip(out, segs))
    assert bits > 0 and 8 * len(words) <= bits + 64
    assert llmzip.decompress(blob, model=tiny_model) == data


def test_compress_keeps_whole_input_classical_when_smaller_than_model_chunks(tiny_model):
    # As if the model had beaten zstd and xz on every chunk: the per-chunk fallback is
    # switched off while model chunks are made. Over the whole input zstd and xz see every
    # repeat (the random tiny model sees none), so the archive must become the better of
    # them over the whole input.
    data = corpus_bytes("alice29.txt", 3000) * 4
    c = llmzip.Compressor(tiny_model, batch=4, seg_len=200)
    code_task = c.code_task

    def model_wins_each_chunk(task, progress=None):
        if task[0] != "model":
            return code_task(task, progress)
        c.fallback = False
        try:
            return code_task(task, progress)
        finally:
            c.fallback = True

    c.code_task = model_wins_each_chunk
    blob = c.compress(data)
    method, _ = best_classical(data)
    assert c.stats.whole_classical and c.stats.chunks == {ct.METHOD_NAMES[method]: 1}
    assert c.stats.model_bytes == 0 and c.stats.ideal_bits == 0
    assert [ch.method for ch in ct.scan(blob).chunks] == [method]
    assert llmzip.decompress(blob) == data          # no model named, none needed
    forced = llmzip.Compressor(tiny_model, batch=4, seg_len=200, fallback=False)
    model_blob = forced.compress(data)
    assert not forced.stats.whole_classical and list(forced.stats.chunks) == ["model"]
    assert len(blob) < len(model_blob)


def test_compress_tries_whole_input_classical_even_when_every_chunk_fell_back(tiny_model):
    # The random tiny model loses every chunk to zstd/xz on its own; the whole input must
    # still be tried, since one xz stream over all chunks sees their shared URL prefixes.
    data = corpus_bytes("urls.10K", 60000)
    c = llmzip.Compressor(tiny_model, batch=2, seg_len=100)
    blob = c.compress(data)
    method, coded = best_classical(data)
    assert c.stats.whole_classical and c.stats.chunks == {ct.METHOD_NAMES[method]: 1}
    assert [ch.coded_len for ch in ct.scan(blob).chunks] == [len(coded)]
    assert llmzip.decompress(blob) == data


def test_compressor_reuse(tiny_model):
    c = llmzip.Compressor(tiny_model, batch=2, seg_len=64)
    d = llmzip.Decompressor(tiny_model)
    for data in (b"first input", b"second, longer input " * 30, b""):
        assert d.decompress(c.compress(data)) == data


def test_binary_growth_is_small(tiny_model):
    for data in (os.urandom(100_000), corpus_bytes("fireworks.jpeg")):
        blob = llmzip.compress(data, model=tiny_model)
        assert len(blob) - len(data) <= 200
        assert llmzip.decompress(blob) == data          # no model needed: no model chunks


def test_bfloat16_round_trip(tiny_model):
    data = corpus_bytes("alice29.txt", 2000)
    c = llmzip.Compressor(tiny_model, dtype="bfloat16", batch=3, seg_len=128, fallback=False,
                          engine="float")
    blob = c.compress(data)
    assert llmzip.decompress(blob, model=tiny_model) == data


def test_threads_one_vs_two_decode(tiny_model):
    data = corpus_bytes("asyoulik.txt", 4000)
    blob = llmzip.compress(data, model=tiny_model, threads=1, batch=4, seg_len=128,
                           fallback=False)
    assert llmzip.decompress(blob, model=tiny_model, threads=2) == data


def test_wrong_model_refused(tiny_model, tmp_path):
    from llmzip.engine.models.registry import load_model
    from llmzip.engine.models.tiny import write_tiny_gguf
    other = load_model(write_tiny_gguf(str(tmp_path / "other.gguf"), seed=1))
    data = b"some text to code with the model " * 50
    blob = llmzip.compress(data, model=tiny_model, batch=2, seg_len=64, fallback=False)
    with pytest.raises(llmzip.ModelMismatchError) as e:
        llmzip.decompress(blob, model=other)
    assert e.value.needed_fingerprint == tiny_model.fingerprint


def test_engine_mismatch_refused_then_allowed(tiny_model):
    """The float engine (0.1): its archives name the CPU, torch and threads they need."""
    data = b"engine profile check " * 80
    blob = llmzip.compress(data, model=tiny_model, batch=2, seg_len=64, fallback=False,
                           engine="float")
    info = ct.scan(blob)
    # rewrite the header as if made with another torch build
    header = dict(info.header)
    header["engine"] = dict(header["engine"], torch="0.0.0-other")
    first = info.chunks[0].offset - ct._CHUNK.size - 4
    forged = ct.header_bytes(header, info.version) + blob[first:]
    with pytest.raises(llmzip.EngineMismatchError, match="compress it again with the exact"):
        llmzip.decompress(forged, model=tiny_model)
    assert llmzip.decompress(forged, model=tiny_model, allow_engine_mismatch=True) == data


def test_undecodable_tokens_are_a_checksum_error(tiny_model, monkeypatch):
    """A model chunk whose coded bytes pass their CRC but decode to tokens no encoder
    writes (a float-engine archive opened on another kind of machine with the engine
    check relaxed: another model's tables) is content that does not match: ChecksumError,
    not the tokenizer's FormatError."""
    import numpy as np
    from llmzip.codec import decompressor
    data = b"some text to code with the model " * 50
    blob = llmzip.compress(data, model=tiny_model, batch=2, seg_len=64, fallback=False)
    V = tiny_model.config.vocab_size

    def wrong_tables(engine, lengths, payload, progress=None):
        return [np.full(n, V + 7, dtype=np.int64) for n in lengths]

    monkeypatch.setattr(decompressor, "decode_segments", wrong_tables)
    with pytest.raises(llmzip.ChecksumError, match="chunk content"):
        llmzip.decompress(blob, model=tiny_model)


def test_fresh_process_decodes_same(tiny_model, tiny_gguf, tmp_path):
    data = corpus_bytes("alice29.txt", 5000)
    blob = llmzip.compress(data, model=tiny_model, batch=4, seg_len=128, fallback=False)
    arc = tmp_path / "a.llmz"
    arc.write_bytes(blob)
    code = ("import sys, llmzip; sys.stdout.buffer.write(llmzip.decompress("
            f"open({str(arc)!r}, 'rb').read(), model={tiny_gguf!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert out == data


def test_weight_cache_gives_identical_model(tiny_gguf, tmp_path, monkeypatch):
    import torch

    from llmzip.engine.models import registry
    monkeypatch.setenv("LLMZIP_CACHE", str(tmp_path / "cache"))
    fresh = registry.LoadedModel(**{**registry.load_model(tiny_gguf).__dict__, "_gpt": {}})
    built = fresh.gpt(torch.float32)                       # dequantise + write cache
    assert os.listdir(tmp_path / "cache")
    again = registry.LoadedModel(**{**fresh.__dict__, "_gpt": {}})
    cached = again.gpt(torch.float32)                      # memory-mapped from the cache
    for (n1, a), (n2, b) in zip(built.state_dict().items(), cached.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    data = corpus_bytes("alice29.txt", 1500)
    b1 = llmzip.compress(data, model=fresh, batch=2, seg_len=64, fallback=False)
    b2 = llmzip.compress(data, model=again, batch=2, seg_len=64, fallback=False)
    assert b1 == b2


@pytest.mark.parametrize("seg_len,batch", [(1, 1), (2, 1), (3, 2), (7, 3)])
def test_escape_pairs_never_split_across_chunks(tiny_model, seg_len, batch):
    # \xff and \xc0 have no token in the tiny vocabulary: each is an escape pair
    data = b"ab\xffc\xc0" * 20 + b"tail"
    ids = tokenizer_for(tiny_model).encode(data)
    assert (ids == tokenizer_for(tiny_model).esc_id).sum() == 40
    blob = llmzip.compress(data, model=tiny_model, seg_len=seg_len, batch=batch,
                           fallback=False)
    assert llmzip.decompress(blob, model=tiny_model) == data


def test_default_threads_env_then_cpus_at_most_two(monkeypatch):
    from llmzip.codec.api import MAX_DEFAULT_THREADS, default_threads
    from llmzip.errors import UsageError
    monkeypatch.setenv("LLMZIP_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("LLMZIP_THREADS", "many")
    with pytest.raises(UsageError):
        default_threads()
    monkeypatch.delenv("LLMZIP_THREADS")
    assert 1 <= default_threads() <= min(MAX_DEFAULT_THREADS, os.cpu_count() or 1)


def test_dtype_auto_resolves_and_is_recorded(tiny_model):
    from llmzip.engine.float_engine import resolve_dtype
    from llmzip.engine.host import cpu_flags
    flags = cpu_flags().split(",")
    expect = "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"
    assert resolve_dtype("auto") == expect and resolve_dtype("float32") == "float32"
    data = b"dtype auto is recorded as what it resolved to. " * 4
    c = llmzip.Compressor(tiny_model, batch=2, seg_len=64, threads=1, fallback=False,
                          engine="float")
    blob = c.compress(data)
    assert ct.scan(blob).header["engine"]["dtype"] == expect
    assert llmzip.decompress(blob, model=tiny_model) == data


def test_cpu_flags_line_and_its_fallback(monkeypatch):
    import platform
    from llmzip.engine import host
    from llmzip.engine.float_engine import resolve_dtype
    line = host.cpu_flags_line()
    assert line is None or line.startswith("flags")
    monkeypatch.setattr(host, "cpu_flags_line", lambda: None)      # no /proc/cpuinfo
    assert host.cpu_flags() == platform.machine()
    assert resolve_dtype("auto") == "float32"                     # no bf16 flag known
