"""The bitwise context mixer (bytecm.c) behind online mode's GPT, from llmzip 0.9.

llmzip 0.5's mixer (bytemix.py) blends byte counts of orders 1..6 into one distribution
and mixes it with the GPT by two weights in the log domain. This one mixes bit by bit, as
paq8 and lpaq do: at each of a byte's 8 binary decisions, 13 hashed context models
(orders 0..6 and 8, words, sparse and column contexts; each a counter, a state map and a
run), a match model and the GPT each give a stretched probability; three mixers with
weight sets chosen by context and by the GPT's confidence combine them, a final mixer
combines the three, and three APM (SSE) stages refine the result. Version 2 (llmzip
0.11) adds two contexts (the byte a match expects; the last three words), a fourth mixer
(the byte before with the node) and state maps indexed by the stretched probability;
version 3 (0.12) a context of the text's layout (in a paragraph's first line, that line
two paragraphs back: a play's alternating speakers; elsewhere the line above). Versions 1
(0.9) and 2 still decode the archives that name them. The model, its
constants and its arithmetic are in bytecm.c's header comment; everything is integer, so
the decoder repeats it exactly.

The range coder needs a whole table before the byte is known, so all 255 nodes of a
byte's tree are predicted from the state at the byte's start and the 256 leaves'
probabilities (products down their paths) make the table; only the 8 nodes on the coded
byte's path learn.
"""

from __future__ import annotations

import ctypes
import math
import os
import time

import numpy as np
import torch

from ..engine.exact.reference import freqs as exact_freqs
from ..errors import KernelUnavailableError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bytecm.c")
FLAGS = ["-O2", "-std=c11", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-strict-aliasing"]
KERNEL = "bitwise context mixer (online mode)"
LOG_FRAC = 10                # the GPT's logits are rounded to Q10 log2 units, as bytemix.py
GPT_PRECISION = 24           # the GPT's table (total 2^24) whose subtree sums are its input
LR = 24                      # mixer rate: w += x err LR 2^-18 (x, err: 8- and 12-bit scales)
LIMIT = 255                  # counters' rate 1/(n + 1.5) stops falling at n = LIMIT
APM_RATE = 7                 # APM entries move 2^-7 of the way per update
VERSION = 4                  # the mixer new archives use (1: llmzip 0.9's, 2: 0.11's,
                             # 3: 0.12's, still decoded)
VERSIONS = (1, 2, 3, 4)
_v, _l, _p = ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)


def _setup(lib) -> None:
    sig = {"llmzip_cm_new": (_v, [_l] * 8), "llmzip_cm_free": (None, [_v]),
           "llmzip_cm_tables": (ctypes.c_int, [_v, _p, _l, _p, _p]),
           "llmzip_cm_update": (ctypes.c_int, [_v, _p, _l])}
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args


def _lib():
    from ..engine.kernels.build import load
    return load("llmzip_bytecm", [SOURCE], FLAGS, per_cpu=False, setup=_setup,
                what=KERNEL)


def log_slots(n: int) -> int:
    """Each model's table: 2^k slots of 64 bytes, k from the piece's length n (a
    context and nibble per slot; at most ~2n of them), between 2^12 and 2^20 (64 MiB)."""
    return min(max((2 * n).bit_length(), 12), 20)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_p)


class BitMixer:
    """The GPT's logits of a step in, frequency tables out; then update(symbols).

    n_streams streams of at most stream_len bytes each (n bytes in all); version: the
    mixer's version (online configs' `mixer` key)."""

    def __init__(self, n_streams: int, stream_len: int, n: int, precision: int,
                 lr: int = LR, limit: int = LIMIT, apm_rate: int = APM_RATE,
                 version: int = VERSION):
        if version not in VERSIONS:
            raise ValueError(f"bitwise context mixer version {version}: only "
                             f"{', '.join(map(str, VERSIONS))} exist")
        self._lib = _lib()
        self.P, self.version = precision, version
        self._m = self._lib.llmzip_cm_new(version, n_streams, max(stream_len, 1),
                                          log_slots(n), lr, limit, apm_rate, precision)
        if not self._m:
            raise KernelUnavailableError(
                "it could not allocate its tables (out of memory?)", KERNEL,
                "Its tables take up to ~1.5 GB for an input of a megabyte or more: free "
                "memory and try again")
        self.seconds = 0.0                  # time spent here (for the benchmarks)

    def __del__(self):
        m, self._m = getattr(self, "_m", None), None
        if m:
            self._lib.llmzip_cm_free(m)

    def gpt_tables(self, logits: torch.Tensor) -> np.ndarray:
        """The GPT's float logits (n, 256) -> integer tables (n, 256) of total 2^24."""
        g = torch.round(logits.double() * ((1 << LOG_FRAC) / math.log(2))).long()
        return exact_freqs(g, GPT_PRECISION).numpy()

    def tables(self, live: np.ndarray, logits: torch.Tensor | None) -> np.ndarray:
        """Frequency tables (len(live), 256) int64 of total 2^P for streams `live`, given
        their GPT logits (len(live), 256) (None: a flat GPT, for measuring the rest)."""
        t0 = time.perf_counter()
        gpt = (np.ones((len(live), 256), dtype=np.int64) if logits is None
               else self.gpt_tables(logits))
        out = self.tables_from(live, gpt)
        self.seconds += time.perf_counter() - t0
        return out

    def tables_from(self, live: np.ndarray, gpt: np.ndarray) -> np.ndarray:
        """tables() given the GPT's integer tables (len(live), 256) (positive entries,
        totals below 2^40)."""
        live = np.ascontiguousarray(live, dtype=np.int64)
        gpt = np.ascontiguousarray(gpt, dtype=np.int64)
        out = np.empty((len(live), 256), dtype=np.int64)
        if self._lib.llmzip_cm_tables(self._m, _ptr(live), len(live), _ptr(gpt), _ptr(out)):
            raise ValueError("context mixer: bad streams or tables")
        return out

    def update(self, symbols: np.ndarray) -> None:
        """Learn the step's coded bytes (after tables())."""
        t0 = time.perf_counter()
        sym = np.ascontiguousarray(symbols, dtype=np.int64)
        if self._lib.llmzip_cm_update(self._m, _ptr(sym), len(sym)):
            raise ValueError("context mixer: update without tables, or bad bytes")
        self.seconds += time.perf_counter() - t0
