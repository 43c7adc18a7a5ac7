"""llmzip.engine.kernels: the bf16 attention kernel and the KV cache that uses it.

The kernel is checked against a float64 reference on the same bf16-rounded keys and
values, for thread-count independence (bit for bit), for sliding windows, and through the
models: stepping the tiny Llama and the tiny Gemma with KernelKVCache gives the logits
of the float32 path within bf16 rounding, and archives made with it round-trip.
"""

import numpy as np
import pytest
import torch

import llmzip
from llmzip.codec import container as ct
from llmzip.engine import kernels
from llmzip.engine.kernels import build
from llmzip.engine.models.gpt import KernelKVCache, KVCache
from conftest import corpus_bytes


def _reference(q, kc, vc, start, stop, scale):
    """float64 softmax(q k^T scale) v over positions start..stop-1 of untiled caches."""
    k = kc[:, :, start:stop].double()                       # (B, K, S, D)
    v = vc[:, :, start:stop].double()
    att = torch.softmax((q.double() @ k.transpose(-2, -1)) * scale, dim=-1)
    return att @ v                                          # (B, K, G, D)


def _inputs(B=3, K=2, G=3, D=64, T=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, K, G, D, generator=g) * 2
    kc = torch.randn(B, K, T, D, generator=g).bfloat16()
    vc = torch.randn(B, K, T, D, generator=g).bfloat16()
    return q, kc, vc


@pytest.mark.parametrize("start,stop", [(0, 1), (0, 15), (0, 16), (0, 17), (0, 80),
                                        (5, 37), (16, 48), (79, 80)])
def test_attend_bf16_matches_float64_reference(start, stop):
    q, kc, vc = _inputs()
    got = kernels.attend_bf16(q, kernels.tile_keys(kc), vc, start, stop, 0.125, 1)
    want = _reference(q, kc, vc, start, stop, 0.125)
    assert got.dtype == torch.float32 and got.shape == q.shape
    assert (got.double() - want).abs().max() < 2e-5


@pytest.mark.parametrize("G,D", [(1, 16), (4, 256), (7, 48)])   # specialised and generic
def test_attend_bf16_other_head_shapes(G, D):
    q, kc, vc = _inputs(B=2, K=1, G=G, D=D, T=32, seed=G)
    got = kernels.attend_bf16(q, kernels.tile_keys(kc), vc, 3, 30, D ** -0.5, 1)
    assert (got.double() - _reference(q, kc, vc, 3, 30, D ** -0.5)).abs().max() < 2e-5


def test_attend_bf16_same_for_any_thread_count():
    q, kc, vc = _inputs(B=5, T=160, seed=3)
    kt = kernels.tile_keys(kc)
    one = kernels.attend_bf16(q, kt, vc, 0, 150, 0.125, 1)
    for threads in (2, 3, 8):
        assert torch.equal(kernels.attend_bf16(q, kt, vc, 0, 150, 0.125, threads), one)


def test_attend_bf16_extreme_scores():
    """Scores far apart (exp underflows to 0 for all but one key) and all equal."""
    q, kc, vc = _inputs(B=1, K=1, G=2, T=32)
    kc = torch.zeros_like(kc)
    kc[0, 0, 7] = 100.0
    q = torch.ones_like(q)
    got = kernels.attend_bf16(q, kernels.tile_keys(kc), vc, 0, 32, 1.0, 1)
    assert torch.equal(got[0, 0, 0], vc[0, 0, 7].float())   # all weight on key 7
    got = kernels.attend_bf16(q * 0, kernels.tile_keys(kc), vc, 0, 32, 1.0, 1)
    assert torch.allclose(got[0, 0, 0], vc[0, 0].float().mean(0), atol=1e-6)


def test_attend_bf16_rejects_bad_shapes():
    q, kc, vc = _inputs(T=80)
    kt = kernels.tile_keys(kc)
    with pytest.raises(ValueError, match="contiguous bfloat16"):
        kernels.attend_bf16(q, kc, vc, 0, 10, 0.125, 1)              # untiled keys
    with pytest.raises(ValueError, match="contiguous bfloat16"):
        kernels.attend_bf16(q, kt, vc.float(), 0, 10, 0.125, 1)
    for start, stop in [(0, 0), (5, 5), (0, 81), (-1, 4)]:
        with pytest.raises(ValueError, match="unsupported shape"):
            kernels.attend_bf16(q, kt, vc, start, stop, 0.125, 1)


@pytest.mark.parametrize("cc", ["missing", "false"])
def test_kernel_unavailable_without_compiler(tmp_path, monkeypatch, cc):
    """No compiler, or one that fails: a typed error, and auto picks torch-f32."""
    import shutil
    monkeypatch.delitem(build._loaded, kernels.NAME, raising=False)
    monkeypatch.setenv("LLMZIP_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc") if cc == "missing"
                       else shutil.which("false"))
    with pytest.raises(llmzip.KernelUnavailableError, match="install gcc") as e:
        kernels.load()
    assert isinstance(e.value, llmzip.LlmzipError)
    assert not kernels.available()
    from llmzip.engine.float_engine import resolve_attention
    assert resolve_attention("auto") == "torch-f32"
    assert not list(tmp_path.glob("kernels/*.tmp"))


def _step_logits(gpt, x, cache):
    with torch.inference_mode():
        return torch.cat([gpt(x[:, t:t + 1], cache, t) for t in range(x.shape[1])], 1)


def test_kernel_cache_steps_match_float32_path(tiny_model):
    gpt = tiny_model.gpt(torch.float32)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, gpt.cfg.vocab_size, (3, 40)))
    ref = _step_logits(gpt, x, KVCache(gpt.cfg, 3, 40))
    got = _step_logits(gpt, x, KernelKVCache(gpt.cfg, 3, 40, threads=2))
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()      # bf16 keys/values
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_kernel_cache_gemma_sliding_window(tmp_path_factory):
    from llmzip.engine.models.registry import load_model
    from llmzip.engine.models.tiny import write_tiny_gemma_gguf
    m = load_model(write_tiny_gemma_gguf(str(tmp_path_factory.mktemp("g") / "g.gguf"), seed=0))
    gpt = m.gpt(torch.float32)
    assert gpt.cfg.sliding_window and gpt.cfg.sliding_window < 30
    x = torch.from_numpy(np.random.default_rng(1).integers(6, gpt.cfg.vocab_size, (2, 40)))
    ref = _step_logits(gpt, x, KVCache(gpt.cfg, 2, 40))
    got = _step_logits(gpt, x, KernelKVCache(gpt.cfg, 2, 40))
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("attention", ["bf16-kernel", "torch-f32"])
def test_compress_records_attention_and_round_trips(tiny_model, attention):
    data = corpus_bytes("alice29.txt", 1500) + "压缩就是理解。".encode()
    blob = llmzip.compress(data, model=tiny_model, batch=3, seg_len=64, fallback=False,
                           attention=attention, engine="float")
    info = ct.scan(blob)
    assert info.version == 9 and ct.METHOD_MODEL in [c.method for c in info.chunks]
    header = info.header
    assert header["engine"]["attention"] == attention
    assert llmzip.decompress(blob, model=tiny_model) == data
    assert llmzip.decompress(blob, model=tiny_model, threads=2) == data


def test_kernel_archive_without_compiler_is_refused_clearly(tiny_model, tmp_path,
                                                             monkeypatch, capsys):
    """Decoding a bf16-kernel archive where the kernel cannot be built: a named error
    (exit code 1 from the CLI), no output file; torch-f32 archives still decode."""
    from llmzip.cli import main
    data = corpus_bytes("alice29.txt", 700)
    blob = llmzip.compress(data, model=tiny_model, batch=2, seg_len=64, fallback=False,
                           attention="bf16-kernel", engine="float")
    plain = llmzip.compress(data, model=tiny_model, batch=2, seg_len=64, fallback=False,
                            attention="torch-f32", engine="float")
    monkeypatch.delitem(build._loaded, kernels.NAME, raising=False)
    monkeypatch.setenv("LLMZIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(llmzip.KernelUnavailableError):
        llmzip.decompress(blob, model=tiny_model)
    assert llmzip.decompress(plain, model=tiny_model) == data
    arc = tmp_path / "a.llmz"
    arc.write_bytes(blob)
    assert main(["decompress", str(arc), "--model", tiny_model.path, "-q"]) == 1
    assert "C compiler" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
