"""Models: the transformer (gpt.py), GGUF loading (gguf_loader.py), named models (registry.py)."""
