"""The codec: bytes <-> archive.

Splits input into text and binary spans, tokenizes text exactly (tokenizer.py), drives
the engine's lockstep with the range coder (lockstep.py, coder.py), picks classical
methods where they win (classical.py) and writes and checks the container (container.py).
api.py (Compressor), decompressor.py and stream.py are the public entry points; online.py
is online mode. The codec imports the engine and llmzip's leaf modules, never tools or
cli.
"""
