"""The engine: token ids in, integer frequency tables out.

A model (models/) steps batches of segments in lockstep over a KV cache (float_engine.py,
kernels/), and probs.py turns its logits into integer frequency tables, the one float->int
boundary. The engine knows nothing of bytes, tokenizers, archives or range coding; it
imports only llmzip's leaf modules (errors), never codec, tools or cli.
"""
