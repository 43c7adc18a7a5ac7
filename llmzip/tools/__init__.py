"""Measurement tools: benchmarks next to classical codecs (bench, corebench), ideal bits
per byte (evaluate), per-token surprise pages (show) and the online scaling study (scale).
They import the codec and the engine; nothing below imports them.
"""
