"""Read a Llama-family GGUF file into our GPT (gpt.py) and our tokenizer (tokenizer.py).

Weights are dequantised with ``gguf.quants.dequantize`` (the reference implementation that
ships with llama.cpp's ``gguf`` package). Q and K projections stay in llama.cpp's layout;
gpt.py applies RoPE to adjacent pairs, which is what that layout expects.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ModelError, UnsupportedModelError
from .gpt import GPT, GPTConfig

SUPPORTED_ARCHS = ("llama",)
SUPPORTED_TOKENIZERS = ("gpt2",)


@dataclass
class GGUFContents:
    path: str
    name: str
    arch: str
    config: GPTConfig
    tensors: dict            # GGUF tensor name -> float32 numpy array (rows, cols)
    tokens: list             # token strings, index = id
    token_types: list        # llama.cpp token types (1 normal, 3 control, ...)
    merges: list             # "a b" merge rules, in priority order
    bos_id: int
    pre: str                 # llama.cpp pre-tokenizer name
    quant_types: dict        # quantisation type name -> number of tensors
    license: str


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_gguf(path: str, weights: bool = True) -> GGUFContents:
    """Metadata, tokenizer and (if `weights`) dequantised float32 tensors of a GGUF file."""
    import gguf  # imported here: loading it costs ~0.2 s and not every command needs it

    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # gguf raises ValueError/struct.error/... on garbage
        raise ModelError(f"cannot read {path} as GGUF: {e}") from None
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedModelError(
            f"architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})", path)
    tok_model = _field(reader, "tokenizer.ggml.model")
    if tok_model not in SUPPORTED_TOKENIZERS:
        raise UnsupportedModelError(
            f"tokenizer {tok_model!r} (supported: byte-level BPE 'gpt2')", path)
    if _field(reader, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise UnsupportedModelError("RoPE scaling", path)

    tensors, quant_types, shapes = {}, {}, {}
    for t in reader.tensors:
        quant_types[t.tensor_type.name] = quant_types.get(t.tensor_type.name, 0) + 1
        shapes[t.name] = tuple(int(x) for x in reversed(t.shape))   # (rows, cols)
        if weights:
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
            tensors[t.name] = np.array(arr, dtype=np.float32, copy=True)
    if "token_embd.weight" not in shapes:
        raise UnsupportedModelError("no token_embd.weight tensor", path)
    n_embd = int(_field(reader, f"{arch}.embedding_length"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    cfg = GPTConfig(
        vocab_size=shapes["token_embd.weight"][0],
        n_layer=int(_field(reader, f"{arch}.block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_kv_head=int(_field(reader, f"{arch}.attention.head_count_kv", n_head)),
        head_dim=int(_field(reader, f"{arch}.rope.dimension_count", n_embd // n_head)),
        ffn_hidden=int(_field(reader, f"{arch}.feed_forward_length")),
        norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        context_length=int(_field(reader, f"{arch}.context_length", 2048)),
        tie_embeddings="output.weight" not in shapes,
    )
    if len(tokens) != cfg.vocab_size:
        raise UnsupportedModelError(
            f"{len(tokens)} tokens in the vocabulary but {cfg.vocab_size} embedding rows", path)
    return GGUFContents(
        path=path,
        name=str(_field(reader, "general.name", os.path.basename(path))),
        arch=arch,
        config=cfg,
        tensors=tensors,
        tokens=tokens,
        token_types=list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))),
        merges=list(_field(reader, "tokenizer.ggml.merges", [])),
        bos_id=int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
        pre=str(_field(reader, "tokenizer.ggml.pre", "default")),
        quant_types=quant_types,
        license=str(_field(reader, "general.license", "unknown")),
    )


def build_gpt(contents: GGUFContents) -> GPT:
    """Our GPT with the GGUF's weights (float32)."""
    cfg, t = contents.config, contents.tensors
    with torch.device("meta"):
        model = GPT(cfg)
    names = {"tok_emb.weight": ["token_embd.weight"], "norm.weight": ["output_norm.weight"]}
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = ["output.weight"]
    per_block = {"attn_norm.weight": ["attn_norm.weight"],
                 "attn.wqkv.weight": ["attn_q.weight", "attn_k.weight", "attn_v.weight"],
                 "attn.wo.weight": ["attn_output.weight"], "ffn_norm.weight": ["ffn_norm.weight"],
                 "mlp.w_gate_up.weight": ["ffn_gate.weight", "ffn_up.weight"],
                 "mlp.w_down.weight": ["ffn_down.weight"]}
    for i in range(cfg.n_layer):
        for ours, theirs in per_block.items():
            names[f"blocks.{i}.{ours}"] = [f"blk.{i}.{x}" for x in theirs]
    state = {}
    for ours, theirs in names.items():
        for name in theirs:
            if name not in t:
                raise UnsupportedModelError(f"missing tensor {name}", contents.path)
        state[ours] = torch.from_numpy(np.concatenate([t[name] for name in theirs]))
    model.load_state_dict(state, strict=False, assign=True)
    # buffers were created on the meta device: make real ones
    from .gpt import rope_tables
    cos, sin = rope_tables(cfg.head_dim, cfg.rope_base, cfg.context_length)
    model.rope_cos, model.rope_sin = cos, sin
    for name, p in model.named_parameters():
        if p.is_meta:
            raise UnsupportedModelError(f"parameter {name} not filled from GGUF", contents.path)
    return model.eval()
