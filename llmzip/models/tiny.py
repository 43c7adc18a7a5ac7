"""A tiny randomly initialised Llama GGUF, written with gguf.GGUFWriter.

Tests and the golden-archive script use it: it goes through the same loading, tokenizer
and engine code as a real model file, in milliseconds. Its weights are random, so it
compresses poorly, but exactly.
"""

from __future__ import annotations

import numpy as np

from ..tokenizer import bytes_to_unicode

# a few merges so BPE has real work to do
_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "e r", "o n", "Ġ s", "Ġ w", "r e",
           "a n", "Ġ o", "Ġ b", "Ġ c", "e n", "Ġ m", "Ġ f", "o u", "Ġ p", "Ġ d"]


def tiny_vocab(missing_bytes: tuple = ()) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): 3 control tokens, byte tokens, merged tokens."""
    b2u = bytes_to_unicode()
    tokens = ["<|endoftext|>", "<|bos|>", "<|ctrl|>"]
    types = [3, 3, 3]
    for b in range(256):
        if b not in missing_bytes:
            tokens.append(b2u[b])
            types.append(1)
    for m in _MERGES:
        tokens.append(m.replace(" ", ""))
        types.append(1)
    return tokens, types, list(_MERGES)


def write_tiny_gguf(path: str, seed: int = 0, n_layer: int = 2, n_embd: int = 32,
                    n_head: int = 4, n_kv_head: int = 2, ffn: int = 64,
                    context: int = 512, missing_bytes: tuple = (0xC0, 0xFF, 0x04)) -> str:
    import gguf

    tokens, types, merges = tiny_vocab(missing_bytes)
    V, C, D = len(tokens), n_embd, n_embd // n_head
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"tiny-llama-seed{seed}")
    w.add_block_count(n_layer)
    w.add_context_length(context)
    w.add_embedding_length(C)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv_head)
    w.add_rope_dimension_count(D)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(0)

    def t(name, *shape, scale=0.3):
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    t("token_embd.weight", V, C, scale=0.1)          # mild logits: no extreme probabilities
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(C, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(C, dtype=np.float32))
        t(f"blk.{i}.attn_q.weight", n_head * D, C)
        t(f"blk.{i}.attn_k.weight", n_kv_head * D, C)
        t(f"blk.{i}.attn_v.weight", n_kv_head * D, C)
        t(f"blk.{i}.attn_output.weight", C, n_head * D)
        t(f"blk.{i}.ffn_gate.weight", ffn, C)
        t(f"blk.{i}.ffn_up.weight", ffn, C)
        t(f"blk.{i}.ffn_down.weight", C, ffn)
    w.add_tensor("output_norm.weight", np.ones(C, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
