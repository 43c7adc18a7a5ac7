"""Tiny randomly initialised GGUF files (Llama; Gemma 3), written with gguf.GGUFWriter.

Tests and the golden-archive script use it: it goes through the same loading, tokenizer
and engine code as a real model file, in milliseconds. Its weights are random, so it
compresses poorly, but exactly.
"""

from __future__ import annotations

import numpy as np

from .vocab import bytes_to_unicode

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


# a SentencePiece-style vocabulary for the tiny Gemma: merged pieces in rank order
_SPM_PIECES = ["▁t", "he", "▁a", "in", "er", "▁the", "on", "▁s", "re", "an", "▁w", "▁o", "en",
               "at", "▁b", "▁c", "nd", "▁and", "ou", "is", "▁of", "it", "▁to", "ing", "▁th",
               "中文", "压缩", "▁▁"]


def tiny_spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) like Gemma's: control tokens, user-defined newline,
    tab and space runs, the 256 byte-fallback tokens <0xXX>, then normal pieces (single
    characters, then merged pieces) with scores falling in rank order."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<unused0>"]
    types = [3] * len(tokens)
    for t in ["\n", "\n\n", "\n\n\n", "  ", "   ", "\t", "\t\t", "<h1>"]:
        tokens.append(t)
        types.append(4)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(6)
    scores = [-1000.0 if ty != 6 else 0.0 for ty in types]
    chars = ("▁" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
             ".,;:!?'\"-()" + "中文压缩是理解。")
    rank = 0
    for p in list(_SPM_PIECES) + list(chars):
        tokens.append(p)
        types.append(1)
        scores.append(-float(rank))
        rank += 1
    return tokens, scores, types


def write_tiny_gemma_gguf(path: str, seed: int = 0, n_layer: int = 3, n_embd: int = 32,
                          n_head: int = 2, n_kv_head: int = 1, head_dim: int = 16,
                          ffn: int = 64, context: int = 512, sliding_window: int = 8,
                          sliding: tuple = (True, False, True)) -> str:
    """A tiny randomly initialised Gemma 3 GGUF (arch "gemma3", SentencePiece-style
    vocabulary), laid out as llama.cpp's converter writes one: norm weights hold 1 + w."""
    import gguf

    tokens, scores, types = tiny_spm_vocab()
    V, C, D, H, K = len(tokens), n_embd, head_dim, n_head, n_kv_head
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "gemma3")
    w.add_name(f"tiny-gemma3-seed{seed}")
    w.add_block_count(n_layer)
    w.add_context_length(context)
    w.add_embedding_length(C)
    w.add_feed_forward_length(ffn)
    w.add_head_count(H)
    w.add_head_count_kv(K)
    w.add_key_length(D)
    w.add_value_length(D)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(sliding_window)
    w.add_sliding_window_pattern(list(sliding))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_space_prefix(False)
    w.add_add_bos_token(True)

    def t(name, *shape, scale=0.3):
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def norm(name, n):
        w.add_tensor(name, (1.0 + rng.standard_normal(n) * 0.1).astype(np.float32))

    t("token_embd.weight", V, C, scale=0.2)
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight", C)
        t(f"blk.{i}.attn_q.weight", H * D, C)
        t(f"blk.{i}.attn_k.weight", K * D, C)
        t(f"blk.{i}.attn_v.weight", K * D, C)
        norm(f"blk.{i}.attn_q_norm.weight", D)
        norm(f"blk.{i}.attn_k_norm.weight", D)
        t(f"blk.{i}.attn_output.weight", C, H * D)
        norm(f"blk.{i}.post_attention_norm.weight", C)
        norm(f"blk.{i}.ffn_norm.weight", C)
        t(f"blk.{i}.ffn_gate.weight", ffn, C)
        t(f"blk.{i}.ffn_up.weight", ffn, C)
        t(f"blk.{i}.ffn_down.weight", C, ffn)
        norm(f"blk.{i}.post_ffw_norm.weight", C)
    norm("output_norm.weight", C)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
