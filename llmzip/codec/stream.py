"""File-object API: ``llmzip.open(file, "rb"|"wb")``, like gzip.open and zstandard's.

Reading decodes chunk by chunk and checks each chunk's CRC before its bytes are returned;
at the end it checks the footer and the whole-content SHA-256, so a truncated or damaged
archive raises an ArchiveError from ``read()`` instead of ending quietly with partial
data. Writing collects the data and writes the archive on ``close()`` (atomically when
given a path: a temporary file in the same folder, renamed only when complete).
"""

from __future__ import annotations

import builtins
import io
import os

from ..errors import UsageError
from ..files import AtomicOutput
from .api import Compressor
from .decompressor import Decompressor


class _DecodingRaw(io.RawIOBase):
    def __init__(self, fileobj, close_file: bool, **decompressor_kw):
        self._f = fileobj
        self._close_file = close_file
        self._chunks = Decompressor(**decompressor_kw).stream(fileobj)
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed and self._close_file:
            self._f.close()
        super().close()


class _EncodingWriter(io.RawIOBase):
    def __init__(self, target, **compressor_kw):
        self._target = target
        self._kw = compressor_kw
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.closed:
            raise ValueError("write to closed llmzip file")
        self._parts.append(bytes(b))
        return len(b)

    def close(self) -> None:
        if self.closed:
            return
        try:
            blob = Compressor(**self._kw).compress(b"".join(self._parts))
            if isinstance(self._target, (str, os.PathLike)):
                with AtomicOutput(os.fspath(self._target), overwrite=True) as o:
                    o.write(blob)
                    o.commit()
            else:
                self._target.write(blob)
                self._target.flush()
        finally:
            self._parts = []
            super().close()


def open(file, mode: str = "rb", *, model=None, **kw):  # noqa: A001 (mirrors gzip.open)
    """Open an llmzip archive for reading ("rb") or writing ("wb").

    `file` is a path or a binary file object. Extra keyword arguments go to Decompressor
    (reading: threads, memory_limit, allow_engine_mismatch) or Compressor (writing:
    dtype, threads, seg_len, batch, ...).
    """
    if mode in ("r", "rb"):
        if isinstance(file, (str, os.PathLike)):
            raw = _DecodingRaw(builtins.open(file, "rb"), True, model=model, **kw)
        else:
            raw = _DecodingRaw(file, False, model=model, **kw)
        return io.BufferedReader(raw)
    if mode in ("w", "wb"):
        return io.BufferedWriter(_EncodingWriter(file, model=model, **kw))
    raise UsageError(f"mode must be 'rb' or 'wb', not {mode!r}")
