"""Range coding over integer frequency tables: constriction's queue range coder.

Knows nothing of models: integer frequencies in, 32-bit words out. A table row holds
frequencies ``f`` (each >= 1, summing to 2**24); symbol s is coded with probability
f_s / 2**24 exactly.

Two implementations give the same words: llmzip's C port of constriction's coder
(rangecoder.c, built on first use; a symbol costs one pass over its row) and constriction
itself, which gets the row as ``f - 1`` through its lazy categorical model (with that total
the model's own quantisation is the identity; checked in tests/test_coder.py). constriction
builds the model from float64 probabilities, ~0.5 ms a symbol for 49,152 symbols, so it
is used only where no C compiler is available and as the tests' oracle.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from ..engine.probs import PRECISION, TOTAL
from ..errors import FormatError, KernelUnavailableError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rangecoder.c")
FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-fvisibility=hidden"]
_v, _l = ctypes.c_void_p, ctypes.c_int64


def _setup(lib) -> None:
    sig = {"llmzip_rc_enc_new": (_v, []), "llmzip_rc_enc_free": (None, [_v]),
           "llmzip_rc_encode": (ctypes.c_int, [_v, _l, _l, _v, _l, _v]),
           "llmzip_rc_enc_finish": (_l, [_v]), "llmzip_rc_enc_words": (_v, [_v]),
           "llmzip_rc_dec_new": (_v, [_v, _l]), "llmzip_rc_dec_free": (None, [_v]),
           "llmzip_rc_decode": (ctypes.c_int, [_v, _l, _l, _v, _l, _v])}
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args


def _lib():
    """The C coder, or None where it cannot be built (constriction is used then)."""
    if os.environ.get("LLMZIP_CODER") == "constriction":
        return None
    from ..engine.kernels.build import load
    try:
        return load("llmzip_rangecoder", [SOURCE], FLAGS, per_cpu=False, setup=_setup,
                    what="range coder")
    except KernelUnavailableError:
        return None


def _rows(freqs: np.ndarray) -> np.ndarray:
    if freqs.ndim != 2:
        raise ValueError("frequency tables must be (n, V)")
    return np.ascontiguousarray(freqs, dtype=np.int32)


def _model_family():
    import constriction
    return constriction.stream.model.Categorical(perfect=False)


def _as_params(freqs: np.ndarray) -> np.ndarray:
    if freqs.ndim != 2:
        raise ValueError("frequency tables must be (n, V)")
    return (freqs - 1).astype(np.float64)


class RangeEncoder:
    """Append symbols, each with its own frequency table; ``finish`` returns the words."""

    def __init__(self, use_constriction: bool = False):
        self._c = None if use_constriction else _lib()
        if self._c is not None:
            self._enc = self._c.llmzip_rc_enc_new()
            if not self._enc:
                raise MemoryError("range encoder")
            return
        import constriction
        self._enc = constriction.stream.queue.RangeEncoder()
        self._family = _model_family()

    def __del__(self):
        if getattr(self, "_c", None) is not None and self._enc:
            self._c.llmzip_rc_enc_free(self._enc)
            self._enc = None

    def encode_symbols(self, symbols: np.ndarray, freqs: np.ndarray) -> None:
        """symbols (n,) int; freqs (n, V) int rows summing to 2**24."""
        if len(symbols) == 0:
            return
        if self._c is None:
            self._enc.encode(np.asarray(symbols, dtype=np.int32), self._family,
                             _as_params(freqs))
            return
        rows = _rows(freqs)
        sym = np.ascontiguousarray(symbols, dtype=np.int64)
        rc = self._c.llmzip_rc_encode(self._enc, len(sym), rows.shape[1], rows.ctypes.data,
                                      rows.shape[1], sym.ctypes.data)
        if rc == 2:
            raise MemoryError("range encoder")
        if rc:
            raise ValueError("a symbol outside its table or of frequency 0")

    def finish(self) -> bytes:
        if self._c is None:
            return self._enc.get_compressed().astype("<u4").tobytes()
        n = self._c.llmzip_rc_enc_finish(self._enc)
        if n < 0:
            raise MemoryError("range encoder")
        ptr = self._c.llmzip_rc_enc_words(self._enc)
        if n == 0:
            return b""
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint32)),
                                     (n,)).astype("<u4").tobytes()


class RangeDecoder:
    def __init__(self, data: bytes, use_constriction: bool = False):
        if len(data) % 4:
            raise FormatError("range-coded payload length is not a multiple of 4")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._c = None if use_constriction else _lib()
        if self._c is not None:
            self._dec = self._c.llmzip_rc_dec_new(words.ctypes.data, len(words))
            if not self._dec:
                raise MemoryError("range decoder")
            return
        import constriction
        self._dec = constriction.stream.queue.RangeDecoder(words)
        self._family = _model_family()

    def __del__(self):
        if getattr(self, "_c", None) is not None and self._dec:
            self._c.llmzip_rc_dec_free(self._dec)
            self._dec = None

    def decode_symbols(self, freqs: np.ndarray) -> np.ndarray:
        """One symbol for each row of freqs (n, V)."""
        if len(freqs) == 0:
            return np.zeros(0, dtype=np.int64)
        if self._c is None:
            try:
                out = self._dec.decode(self._family, _as_params(freqs))
            except Exception as e:   # constriction raises on exhausted/invalid data
                raise FormatError(f"range decoder failed: {e}") from None
            return np.asarray(out, dtype=np.int64)
        rows = _rows(freqs)
        out = np.empty(len(rows), dtype=np.int64)
        if self._c.llmzip_rc_decode(self._dec, len(rows), rows.shape[1], rows.ctypes.data,
                                    rows.shape[1], out.ctypes.data):
            raise FormatError("range decoder failed: invalid data for these tables")
        return out


assert TOTAL == 1 << PRECISION
