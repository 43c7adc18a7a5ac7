"""The engine: token ids in, integer frequency tables out.

models/ holds the transformers and their loading from GGUF files; float_engine.py steps
batches of segments in lockstep over a KV cache (kernels/ for attention) and probs.py
turns the logits into integer frequency tables, the one float->int boundary; score.py
gives the ideal bits of token ids; host.py knows the machine (CPU flags, cache folder).
The engine knows nothing of archives, tokenizers or range coding: it imports only
llmzip's leaf modules (errors), never codec, tools or cli (tests/test_layout.py).
"""
