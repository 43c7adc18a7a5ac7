"""Read a GGUF file into our transformer and the vocabulary data that the codec's
tokenizer (codec/tokenizer.py) is built from.

Two architectures, chosen by ``general.architecture``: ``llama`` (gpt.py) and ``gemma3``
(gemma.py). Weights are dequantised with ``gguf.quants.dequantize`` (the reference
implementation that ships with llama.cpp's ``gguf`` package). Llama's Q and K projections
stay in llama.cpp's layout; gpt.py applies RoPE to adjacent pairs, which is what that layout
expects. Gemma's are not permuted by llama.cpp's converter; gemma.py rotates halves.
"""

from __future__ import annotations

import hashlib
import os
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import ModelError, UnsupportedModelError
from .gpt import GPT, GPTConfig

SUPPORTED_ARCHS = ("llama", "gemma3")
# tokenizer.ggml.model: "gpt2" = byte-level BPE (ByteTokenizer), "llama" = SentencePiece-style
# BPE with byte fallback (SpmTokenizer)
SUPPORTED_TOKENIZERS = ("gpt2", "llama")


@dataclass
class GGUFContents:
    path: str
    name: str
    arch: str
    config: GPTConfig        # or gemma.GemmaConfig for arch "gemma3"
    tensors: dict            # GGUF tensor name -> float32 numpy array (rows, cols)
    tokens: list             # token strings, index = id
    token_types: list        # llama.cpp token types (1 normal, 3 control, ...)
    merges: list             # "a b" merge rules, in priority order
    bos_id: int
    pre: str                 # llama.cpp pre-tokenizer name
    quant_types: dict        # quantisation type name -> number of tensors
    license: str
    tok_model: str = "gpt2"  # tokenizer.ggml.model
    scores: list = field(default_factory=list)   # SentencePiece scores (tok_model "llama")
    add_space_prefix: bool = False               # SentencePiece dummy prefix (not used)


def _field(meta: dict, key, default=None):
    return meta.get(key, default)


# GGUF metadata value types -> struct format (8 = string, 9 = array)
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
               10: "<u8", 11: "<i8", 12: "<f8"}


@dataclass
class _TensorInfo:
    name: str
    dims: tuple              # GGUF order (fastest-varying first)
    qtype: int               # ggml quantisation type
    offset: int              # absolute byte offset of its data in the file


def _read_gguf_header(path: str):
    """(metadata dict, tensor infos, file as a read-only uint8 memmap) of a little-endian
    GGUF v2/v3 file. A plain reader: gguf.GGUFReader builds a numpy view per array item,
    which takes seconds (tens of seconds on a busy machine) for a 262k-token vocabulary."""
    import struct
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        if pos + n > len(buf):
            raise ValueError("string runs past the end of the file")
        v = bytes(buf[pos:pos + n]).decode("utf-8")
        pos += n
        return v

    def value(vtype):
        nonlocal pos
        if vtype in _GGUF_SCALARS:
            return take(_GGUF_SCALARS[vtype])
        if vtype == 8:
            return string()
        if vtype == 9:
            itype, n = take("<I"), take("<Q")
            if itype in _GGUF_NUMPY:
                dt = np.dtype(_GGUF_NUMPY[itype])
                if pos + n * dt.itemsize > len(buf):
                    raise ValueError("array runs past the end of the file")
                arr = np.frombuffer(buf, dtype=dt, count=n, offset=pos)
                pos += n * dt.itemsize
                return [bool(x) for x in arr] if itype == 7 else arr.tolist()
            if itype == 8:
                return strings(n)
            return [value(itype) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {vtype}")

    def strings(n):
        """An array of n strings (a vocabulary: 49,152 to 262,144 of them), read from a
        memoryview with one struct call each (numpy slices took 0.2 s for SmolLM2's, 0.04 s
        this way)."""
        nonlocal pos
        mv, length = memoryview(buf), len(buf)
        q, p, out = struct.Struct("<Q").unpack_from, pos, []
        for _ in range(n):
            if p + 8 > length:
                raise ValueError("string runs past the end of the file")
            k = q(mv, p)[0]
            p += 8
            if p + k > length:
                raise ValueError("string runs past the end of the file")
            out.append(str(mv[p:p + k], "utf-8"))
            p += k
        pos = p
        return out

    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    pos = 4
    version = take("<I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (supported: 2, 3)")
    n_tensors, n_kv = take("<Q"), take("<Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        n_dims = take("<I")
        dims = tuple(take("<Q") for _ in range(n_dims))
        infos.append(_TensorInfo(name, dims, take("<I"), take("<Q")))
    align = int(meta.get("general.alignment", 32))
    start = (pos + align - 1) // align * align
    for t in infos:
        t.offset += start
    return meta, infos, buf


def _tensor_data(buf, t: _TensorInfo) -> np.ndarray:
    """The tensor dequantised to float32, shape (rows, cols) (GGUF dims reversed)."""
    import gguf
    qtype = gguf.GGMLQuantizationType(t.qtype)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(t.dims)) if t.dims else 1
    nbytes = n * type_size // block
    if t.offset + nbytes > len(buf):
        raise ValueError(f"tensor {t.name} runs past the end of the file")
    raw = buf[t.offset:t.offset + nbytes]
    shape = tuple(reversed(t.dims))
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        raw = raw.view(np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16)
        raw = raw.reshape(shape)
    else:
        raw = raw.reshape(gguf.quants.quant_shape_to_byte_shape(shape, qtype))
    return np.array(gguf.quants.dequantize(raw, qtype), dtype=np.float32, copy=True)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_gguf(path: str, weights: bool = True) -> GGUFContents:
    """Metadata, tokenizer and (if `weights`) dequantised float32 tensors of a GGUF file."""
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    try:
        reader, infos, buf = _read_gguf_header(path)
    except Exception as e:  # ValueError/struct.error/UnicodeDecodeError/... on garbage
        raise ModelError(f"cannot read {path} as GGUF: {e}") from None
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedModelError(
            f"architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})", path)
    tok_model = _field(reader, "tokenizer.ggml.model")
    if tok_model not in SUPPORTED_TOKENIZERS:
        raise UnsupportedModelError(
            f"tokenizer {tok_model!r} (supported: byte-level BPE 'gpt2', "
            f"SentencePiece-style 'llama')", path)
    if arch == "llama" and _field(reader, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise UnsupportedModelError("RoPE scaling", path)

    tensors, quant_types, shapes = {}, {}, {}
    import gguf  # imported here: loading it costs ~0.2 s and not every command needs it
    for t in infos:
        try:
            qname = gguf.GGMLQuantizationType(t.qtype).name
        except ValueError:
            raise UnsupportedModelError(f"tensor {t.name}: unknown type {t.qtype}", path) from None
        quant_types[qname] = quant_types.get(qname, 0) + 1
        shapes[t.name] = tuple(int(x) for x in reversed(t.dims))     # (rows, cols)
        if weights:
            try:
                tensors[t.name] = _tensor_data(buf, t)
            except (ValueError, NotImplementedError) as e:
                raise ModelError(f"cannot read tensor {t.name} of {path}: {e}") from None
    if "token_embd.weight" not in shapes:
        raise UnsupportedModelError("no token_embd.weight tensor", path)
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    if arch == "gemma3":
        cfg = _gemma3_config(reader, shapes, path)
    else:
        cfg = _llama_config(reader, arch, shapes)
    if len(tokens) != cfg.vocab_size:
        raise UnsupportedModelError(
            f"{len(tokens)} tokens in the vocabulary but {cfg.vocab_size} embedding rows", path)
    scores = list(_field(reader, "tokenizer.ggml.scores", [])) if tok_model == "llama" else []
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
        tok_model=str(tok_model),
        scores=scores,
        add_space_prefix=bool(_field(reader, "tokenizer.ggml.add_space_prefix", False)),
    )


def _llama_config(reader, arch: str, shapes: dict) -> GPTConfig:
    n_embd = int(_field(reader, f"{arch}.embedding_length"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    return GPTConfig(
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


def _gemma3_config(reader, shapes: dict, path: str):
    """GemmaConfig from gemma3.* metadata; where llama.cpp's converter writes no key,
    the default is the one llama.cpp (and transformers' Gemma3TextConfig) uses."""
    from .gemma import GemmaConfig
    a = "gemma3"
    n_layer = int(_field(reader, f"{a}.block_count"))
    n_embd = int(_field(reader, f"{a}.embedding_length"))
    n_head = int(_field(reader, f"{a}.attention.head_count"))
    head_dim = int(_field(reader, f"{a}.attention.key_length", n_embd // n_head))
    if int(_field(reader, f"{a}.attention.value_length", head_dim)) != head_dim:
        raise UnsupportedModelError("key and value heads of different sizes", path)
    if int(_field(reader, f"{a}.rope.dimension_count", head_dim)) != head_dim:
        raise UnsupportedModelError("RoPE on part of a head", path)
    if float(_field(reader, f"{a}.attn_logit_softcapping", 0.0) or 0.0) > 0:
        raise UnsupportedModelError("attention logit soft-capping", path)
    rope_scale = 1.0        # linear scaling of the global layers' positions (Gemma 3 4B+)
    scaling = _field(reader, f"{a}.rope.scaling.type")
    if scaling == "linear":
        rope_scale = float(_field(reader, f"{a}.rope.scaling.factor", 1.0))
    elif scaling not in (None, "none"):
        raise UnsupportedModelError(f"RoPE scaling {scaling!r}", path)
    # sliding-window layers: a period n (layer i slides iff (i + 1) % n != 0) or one flag
    # per layer; llama.cpp's default for gemma3 is a period of 6
    pattern = _field(reader, f"{a}.attention.sliding_window_pattern", 6)
    if isinstance(pattern, (list, tuple)):
        sliding = tuple(bool(x) for x in pattern)
        if len(sliding) != n_layer:
            raise UnsupportedModelError("sliding_window_pattern length != block_count", path)
    else:
        n = int(pattern)
        sliding = tuple(n > 0 and (i + 1) % n != 0 for i in range(n_layer))
    # 1/sqrt(query_pre_attn_scalar): llama.cpp uses the head size, except for the 27B model
    # (62 layers), whose query_pre_attn_scalar is n_embd / n_head
    default_scale = 1 / math.sqrt(n_embd / n_head if n_layer == 62 else head_dim)
    return GemmaConfig(
        vocab_size=shapes["token_embd.weight"][0],
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_kv_head=int(_field(reader, f"{a}.attention.head_count_kv", n_head)),
        head_dim=head_dim,
        ffn_hidden=int(_field(reader, f"{a}.feed_forward_length")),
        norm_eps=float(_field(reader, f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_base=float(_field(reader, f"{a}.rope.freq_base", 1_000_000.0)),
        rope_base_local=float(_field(reader, f"{a}.rope.freq_base_swa", 10_000.0)),
        rope_scale=rope_scale,
        sliding_window=int(_field(reader, f"{a}.attention.sliding_window", 0) or 0),
        sliding_layers=sliding,
        attn_scale=float(_field(reader, f"{a}.attention.scale", default_scale)),
        embed_scale=float(_field(reader, f"{a}.embedding_scale", math.sqrt(n_embd))),
        final_softcap=float(_field(reader, f"{a}.final_logit_softcapping", 0.0) or 0.0),
        context_length=int(_field(reader, f"{a}.context_length", 32768)),
        tie_embeddings="output.weight" not in shapes,
    )


def new_model(cfg):
    """An empty model of the right class for `cfg`, on the meta device (no memory)."""
    from .gemma import Gemma, GemmaConfig
    with torch.device("meta"):
        model = Gemma(cfg) if isinstance(cfg, GemmaConfig) else GPT(cfg)
    return model


def make_buffers(model) -> None:
    """Real (non-meta) RoPE tables for a model built by new_model and given weights."""
    model.make_buffers()


def build_gpt(contents: GGUFContents):
    """Our transformer (GPT, or Gemma for arch "gemma3") with the GGUF's weights (float32)."""
    if contents.arch == "gemma3":
        return _build_gemma(contents)
    per_block = {"attn_norm.weight": ["attn_norm.weight"],
                 "attn.wqkv.weight": ["attn_q.weight", "attn_k.weight", "attn_v.weight"],
                 "attn.wo.weight": ["attn_output.weight"], "ffn_norm.weight": ["ffn_norm.weight"],
                 "mlp.w_gate_up.weight": ["ffn_gate.weight", "ffn_up.weight"],
                 "mlp.w_down.weight": ["ffn_down.weight"]}
    return _load_state(new_model(contents.config), per_block, contents)


def _load_state(model, per_block: dict, contents: GGUFContents):
    """Fill `model` (built on the meta device) from GGUF tensors. `per_block` maps each
    block parameter of ours to its GGUF tensors ([theirs, ...], concatenated along rows);
    embedding, final norm and untied output layer are the same for every architecture."""
    cfg, t = contents.config, contents.tensors
    names = {"tok_emb.weight": ["token_embd.weight"], "norm.weight": ["output_norm.weight"]}
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = ["output.weight"]
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
    make_buffers(model)
    for name, p in model.named_parameters():
        if p.is_meta:
            raise UnsupportedModelError(f"parameter {name} not filled from GGUF", contents.path)
    return model.eval()


def _build_gemma(contents: GGUFContents):
    """Gemma 3. llama.cpp's converter stores Gemma's norm weights with the +1 of Gemma's
    RMSNorm (x * (1 + w)) already added, so they are used as they are (verified against
    transformers, which subtracts 1 when loading a GGUF and adds it back in its RMSNorm)."""
    per_block = {"attn_norm.weight": ["attn_norm.weight"],
                 "attn.wqkv.weight": ["attn_q.weight", "attn_k.weight", "attn_v.weight"],
                 "attn.q_norm.weight": ["attn_q_norm.weight"],
                 "attn.k_norm.weight": ["attn_k_norm.weight"],
                 "attn.wo.weight": ["attn_output.weight"],
                 "post_attn_norm.weight": ["post_attention_norm.weight"],
                 "ffn_norm.weight": ["ffn_norm.weight"],
                 "mlp.w_gate_up.weight": ["ffn_gate.weight", "ffn_up.weight"],
                 "mlp.w_down.weight": ["ffn_down.weight"],
                 "post_ffn_norm.weight": ["post_ffw_norm.weight"]}
    return _load_state(new_model(contents.config), per_block, contents)
