"""Range coding driven by the engine: token segments <-> range-coded words.

The engine's lockstep (engine/float_engine.py) steps a batch of segments together and
hands each step's integer frequency tables to a callback; here the encoder's callback
codes the true tokens with them and the decoder's decodes the tokens from them. Both go
through the same lockstep with the same shapes, so the tables are bit-identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine.probs import bits_of
from ..errors import FormatError
from .coder import RangeDecoder, RangeEncoder

if TYPE_CHECKING:
    from ..engine.float_engine import Engine


def encode_segments(engine: Engine, segments: list[np.ndarray], progress=None
                    ) -> tuple[bytes, float]:
    """Code segments of token ids; returns (range-coded words, ideal bits)."""
    enc = RangeEncoder()
    total_bits = [0.0]

    def step(t, live, freqs):
        symbols = np.array([segments[i][t] for i in live], dtype=np.int64)
        enc.encode_symbols(symbols, freqs)
        total_bits[0] += float(bits_of(freqs, symbols, engine.profile.precision).sum())
        return symbols

    engine.lockstep([len(s) for s in segments], step, progress)
    return enc.finish(), total_bits[0]


def decode_segments(engine: Engine, lengths: list[int], payload: bytes, progress=None
                    ) -> list[np.ndarray]:
    """The token segments of the given lengths that encode_segments coded into payload."""
    dec = RangeDecoder(payload)
    out = [np.zeros(n, dtype=np.int64) for n in lengths]
    V = engine.model.config.vocab_size

    def step(t, live, freqs):
        symbols = dec.decode_symbols(freqs)
        if symbols.size and (symbols.min() < 0 or symbols.max() >= V):
            raise FormatError("decoded token id outside the vocabulary")
        for i, s in zip(live, symbols):
            out[i][t] = s
        return symbols

    engine.lockstep(lengths, step, progress)
    return out
