"""The classical chunk methods: stored, zstd and xz. No model; bytes in, bytes out.

Every chunk a model does not code, and every chunk a model codes worse, is written with
the smallest of these three (``best_classical``), so an archive is never much larger
than zstd -19 or xz -9e would make it on the same pieces. Byte layout: docs/format.md.

- zstd: one zstd frame, level 19.
- xz: one raw LZMA2 stream (no .xz container: 56 bytes less than ``xz`` on a 700 kB file),
  preset 9 extreme, with a dictionary just large enough for the chunk. The decoder derives
  the same dictionary size from the chunk's raw length, so none is stored, and a corrupt
  chunk cannot make it allocate more than twice the chunk's size (at least 4 KiB).
"""

from __future__ import annotations

import lzma

from ..errors import FormatError
from . import container as ct

ZSTD_LEVEL = 19
XZ_PRESET = 9 | lzma.PRESET_EXTREME
XZ_MIN_DICT = 1 << 12                   # LZMA2's smallest dictionary


def xz_dict_size(raw_len: int) -> int:
    """The LZMA2 dictionary for a chunk of raw_len bytes: the next power of two, >= 4 KiB.
    Encoder and decoder both compute it; it is not stored."""
    return max(XZ_MIN_DICT, 1 << max(0, raw_len - 1).bit_length())


def zstd_compress(raw: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)


def zstd_decompress(coded: bytes, raw_len: int) -> bytes:
    import zstandard
    try:
        return zstandard.ZstdDecompressor().decompress(coded, max_output_size=raw_len)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd chunk is corrupt: {e}") from None


def xz_compress(raw: bytes) -> bytes:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET,
                "dict_size": xz_dict_size(len(raw))}]
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=filters)


def xz_decompress(coded: bytes, raw_len: int) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                              filters=[{"id": lzma.FILTER_LZMA2,
                                        "dict_size": xz_dict_size(raw_len)}])
    try:
        raw = d.decompress(coded, max_length=raw_len)
    except lzma.LZMAError as e:
        raise FormatError(f"xz chunk is corrupt: {e}") from None
    if not d.eof or d.unused_data or len(raw) != raw_len:
        # eof unset: the stream stops early or holds more than raw_len bytes
        raise FormatError(f"xz chunk does not decode to exactly {raw_len} bytes")
    return raw


def best_classical(raw: bytes) -> tuple[int, bytes]:
    """(method, coded bytes): the smallest of zstd -19, xz -9e and storing `raw` as is;
    ties go to the faster decoder (stored, then zstd)."""
    best = (ct.METHOD_STORED, raw)
    for method, coder in ((ct.METHOD_ZSTD, zstd_compress), (ct.METHOD_XZ, xz_compress)):
        coded = coder(raw)
        if len(coded) < len(best[1]):
            best = (method, coded)
    return best


def decode_classical(method: int, coded: bytes, raw_len: int) -> bytes:
    """The raw bytes of a stored, zstd or xz chunk (lengths and CRCs are checked by the
    caller); FormatError for any other method or corrupt data."""
    if method == ct.METHOD_STORED:
        return coded
    if method == ct.METHOD_ZSTD:
        return zstd_decompress(coded, raw_len)
    if method == ct.METHOD_XZ:
        return xz_decompress(coded, raw_len)
    raise FormatError(f"chunk method {ct.METHOD_NAMES.get(method, method)} is not classical")


CLASSICAL_METHODS = (ct.METHOD_STORED, ct.METHOD_ZSTD, ct.METHOD_XZ)
