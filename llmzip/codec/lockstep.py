"""Range coding driven by the engine: token segments <-> range-coded words.

The decoder steps a batch of segments together (the engine's lockstep) and decodes each
step's tokens from its integer frequency tables; the encoder codes the true tokens with the
same tables in the same order (step t, then segment). The float engine (0.1) gets them
through the very same lockstep with the same shapes; the exact engine computes them a
block of positions at a time (encode_steps, a parallel prefill), which its integer
arithmetic makes bit-identical to the decoder's steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine.probs import bits_of
from ..errors import FormatError
from .coder import RangeDecoder, RangeEncoder

if TYPE_CHECKING:
    from ..engine.exact import ExactEngine
    from ..engine.float_engine import Engine


def encode_segments(engine: Engine | ExactEngine, segments: list[np.ndarray], progress=None
                    ) -> tuple[bytes, float]:
    """Code segments of token ids; returns (range-coded words, ideal bits)."""
    enc = RangeEncoder()
    total_bits = [0.0]

    def step(t, live, freqs):
        symbols = np.array([segments[i][t] for i in live], dtype=np.int64)
        enc.encode_symbols(symbols, freqs)
        total_bits[0] += float(bits_of(freqs, symbols, engine.profile.precision).sum())
        return symbols

    if hasattr(engine, "encode_steps"):
        for t, live, freqs in engine.encode_steps(segments, progress):
            step(t, live, freqs)
    else:
        engine.lockstep([len(s) for s in segments], step, progress)
    return enc.finish(), total_bits[0]


def decode_segments(engine: Engine | ExactEngine, lengths: list[int], payload: bytes, progress=None
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
