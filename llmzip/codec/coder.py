"""Range coding over integer frequency tables (constriction's queue coder).

Knows nothing of models: integer frequencies in, 32-bit words out. A table row with
frequencies ``f`` (each >= 1, summing to 2**24) is handed to constriction's lazy
categorical model as ``f - 1``: with that total the model's own quantisation is the
identity, so the coded distribution is exactly ``f / 2**24`` (checked in tests/test_coder.py).
"""

from __future__ import annotations

import numpy as np

from ..engine.probs import PRECISION, TOTAL
from ..errors import FormatError


def _model_family():
    import constriction
    return constriction.stream.model.Categorical(perfect=False)


def _as_params(freqs: np.ndarray) -> np.ndarray:
    if freqs.ndim != 2:
        raise ValueError("frequency tables must be (n, V)")
    return (freqs - 1).astype(np.float64)


class RangeEncoder:
    """Append symbols, each with its own frequency table; ``finish`` returns the words."""

    def __init__(self):
        import constriction
        self._enc = constriction.stream.queue.RangeEncoder()
        self._family = _model_family()

    def encode_symbols(self, symbols: np.ndarray, freqs: np.ndarray) -> None:
        """symbols (n,) int; freqs (n, V) int64 rows summing to 2**24."""
        if len(symbols) == 0:
            return
        self._enc.encode(np.asarray(symbols, dtype=np.int32), self._family, _as_params(freqs))

    def finish(self) -> bytes:
        return self._enc.get_compressed().astype("<u4").tobytes()


class RangeDecoder:
    def __init__(self, data: bytes):
        import constriction
        if len(data) % 4:
            raise FormatError("range-coded payload length is not a multiple of 4")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._dec = constriction.stream.queue.RangeDecoder(words)
        self._family = _model_family()

    def decode_symbols(self, freqs: np.ndarray) -> np.ndarray:
        """One symbol for each row of freqs (n, V)."""
        if len(freqs) == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            out = self._dec.decode(self._family, _as_params(freqs))
        except Exception as e:   # constriction raises on exhausted/invalid data
            raise FormatError(f"range decoder failed: {e}") from None
        return np.asarray(out, dtype=np.int64)


assert TOTAL == 1 << PRECISION
