"""Range coding driven by the engine: token segments <-> range-coded words.

The decoder steps a batch of segments together (the engine's lockstep) and decodes each
step's tokens from its integer frequency tables; the encoder codes the true tokens with the
same tables in the same order (step t, then segment). The float engine (0.1) gets them
through the very same lockstep with the same shapes; the exact engine computes them a
block of positions at a time (encode_steps, a parallel prefill), which its integer
arithmetic makes bit-identical to the decoder's steps. With adaptive models (adapt.py, the
exact engine only) the engine hands over logits and an Adapter, fed the same steps in the
same order on both sides, makes the tables and learns from each step's tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine.probs import bits_of
from ..errors import FormatError
from .adapt import AdaptConfig, Adapter
from .coder import RangeDecoder, RangeEncoder
from .draft import Drafter

if TYPE_CHECKING:
    from ..engine.exact import ExactEngine
    from ..engine.float_engine import Engine

SPECULATE = True         # the exact engine's decoder guesses tokens ahead (draft.py); the
                         # tokens decoded are the same either way (tests compare them)


def _adapter(engine, n_seg: int) -> Adapter | None:
    """The adaptive models the engine's profile names (ExactProfile.adapt), or None."""
    adapt = AdaptConfig.from_dict(getattr(engine.profile, "adapt", None) or {})
    if not adapt.active:
        return None
    return Adapter(adapt, n_seg, engine.model.config.vocab_size, engine.profile.precision,
                   engine.kernel.table)


def _learner(engine, n_seg: int):
    """The engine's dynamic evaluation for this run (engine/exact/learn.py), or None."""
    make = getattr(engine, "learner", None)
    return make(n_seg) if make is not None else None


def encode_segments(engine: Engine | ExactEngine, segments: list[np.ndarray], progress=None,
                    timing: dict | None = None) -> tuple[bytes, float]:
    """Code segments of token ids; returns (range-coded words, ideal bits). timing, if
    given, gets the seconds spent in the adaptive models added to "adapt_seconds" (of
    them, making the tables from their logits to "adapt_table_seconds"), and in dynamic
    evaluation's steps to "learn_seconds"."""
    enc = RangeEncoder()
    total_bits = [0.0]
    ad = _adapter(engine, len(segments))
    learn = _learner(engine, len(segments))

    def step(t, live, freqs):
        symbols = np.array([segments[i][t] for i in live], dtype=np.int64)
        if ad is not None:
            freqs = ad.tables(live, freqs)           # the engine gave logits
        enc.encode_symbols(symbols, freqs)
        total_bits[0] += float(bits_of(freqs, symbols, engine.profile.precision).sum())
        if ad is not None:
            ad.update(symbols)
        if learn is not None:
            learn.observe(t, live, freqs, symbols)
        return symbols

    out = "freqs" if ad is None else "logits"
    if hasattr(engine, "encode_steps"):
        for t, live, freqs in engine.encode_steps(segments, progress, out=out, learner=learn):
            step(t, live, freqs)
    else:
        engine.lockstep([len(s) for s in segments], step, progress)
    if timing is not None and ad is not None:
        timing["adapt_seconds"] = timing.get("adapt_seconds", 0.0) + ad.seconds
        timing["adapt_table_seconds"] = (timing.get("adapt_table_seconds", 0.0)
                                         + ad.table_seconds)
    if timing is not None and learn is not None:
        timing["learn_seconds"] = timing.get("learn_seconds", 0.0) + learn.seconds
    return enc.finish(), total_bits[0]


def decode_segments(engine: Engine | ExactEngine, lengths: list[int], payload: bytes, progress=None
                    ) -> list[np.ndarray]:
    """The token segments of the given lengths that encode_segments coded into payload."""
    dec = RangeDecoder(payload)
    out = [np.zeros(n, dtype=np.int64) for n in lengths]
    V = engine.model.config.vocab_size
    ad = _adapter(engine, len(lengths))
    learn = _learner(engine, len(lengths))
    draft = (Drafter(len(lengths)) if SPECULATE and learn is None
             and hasattr(engine, "encode_steps") else None)    # the exact engine

    def step(t, live, freqs):
        if ad is not None:
            freqs = ad.tables(live, freqs)
        symbols = dec.decode_symbols(freqs)
        if symbols.size and (symbols.min() < 0 or symbols.max() >= V):
            raise FormatError("decoded token id outside the vocabulary")
        if ad is not None:
            ad.update(symbols)
        if learn is not None:
            learn.observe(t, live, freqs, symbols)
        for i, s in zip(live, symbols):
            out[i][t] = s
            if draft is not None:
                draft.observe(int(i), int(s))
        return symbols

    kw = {} if learn is None else {"learner": learn}
    if draft is not None:
        kw["draft"] = draft
    if ad is not None:
        kw["out"] = "logits"
    engine.lockstep(lengths, step, progress, **kw)     # (the float engine takes neither)
    return out
