"""Decompressor: archives back to their original bytes, whole or a byte range at a time
(random access: only the chunks that hold the range are decoded), and the one-shot
decompress / decompress_range. The model an archive names is loaded on demand, and its
engine rebuilt from the header's profile (refused where it cannot give the same tables).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..engine.exact import ARITH_VERSION, KERNELS, ExactEngine, ExactProfile
from ..engine.float_engine import ATTENTIONS, Engine, EngineProfile
from ..engine.models.registry import PACKAGED, LoadedModel, load_model
from ..errors import (ChecksumError, EngineMismatchError, FormatError, LimitError,
                      ModelError, ModelMismatchError, UsageError)
from . import container as ct
from .adapt import AdaptConfig
from .api import (_CHECKED_ENGINE_FIELDS, DEFAULT_MEMORY_LIMIT, FORMAT_NAME, MAX_SEGMENTS,
                  SLIDES, _get_varint, _window_ok, check_device)
from .classical import CLASSICAL_METHODS, decode_classical
from .lockstep import decode_segments
from .segment import balanced
from .tokenizer import tokenizer_for


class Decompressor:
    """Decodes archives; loads the model an archive names (or the one given) on demand."""

    def __init__(self, model: str | LoadedModel | None = None, *, threads: int | None = None,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT, allow_engine_mismatch: bool = False,
                 kernel: str = "auto", device: str = "cpu"):
        """threads: None follows the machine's load (exact engine) or uses the archive's
        count (float engine). kernel forces one of the exact engine's kernel paths."""
        check_device(device)
        if kernel not in KERNELS:
            raise UsageError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        self._model_spec = model
        self.kernel = kernel
        self.threads = threads
        self.engine = None                  # set once an archive needs a model
        self.memory_limit = memory_limit
        self.allow_engine_mismatch = allow_engine_mismatch
        self.chunks_decoded = 0             # chunks the last call decoded (random access)

    def _model_for(self, header: dict) -> LoadedModel:
        need = header.get("model") or {}
        spec = self._model_spec
        if spec is None:
            from ..engine.models.catalog import user_models
            if need.get("name") in PACKAGED or need.get("name") in user_models():
                spec = need["name"]
            else:
                raise ModelError(
                    f"archive needs model {need.get('name')!r} (file {need.get('file')!r}, "
                    f"sha256 {str(need.get('fingerprint'))[:16]}…); pass --model PATH")
        model = spec if isinstance(spec, LoadedModel) else load_model(spec)
        tokenizer_for(model)                # built (or refused) before any decoding
        if model.fingerprint != need.get("fingerprint"):
            raise ModelMismatchError(str(need.get("name")), str(need.get("fingerprint")),
                                     model.name, model.fingerprint)
        return model

    def _engine_for(self, header: dict, model: LoadedModel) -> Engine | ExactEngine:
        eng = header.get("engine")
        if not isinstance(eng, dict):
            raise FormatError("header lacks the engine profile")
        if eng.get("kind") == "exact":
            return self._exact_engine(eng, model)
        known = set(EngineProfile.__dataclass_fields__)
        try:
            archived = EngineProfile(**{k: v for k, v in eng.items() if k in known})
        except TypeError as e:
            raise FormatError(f"bad engine profile: {e}") from None
        local = EngineProfile.make(dtype=archived.dtype, threads=archived.threads,
                                   seg_len=archived.seg_len, batch=archived.batch,
                                   precision=archived.precision, attention=archived.attention)
        if not self.allow_engine_mismatch:
            for f in _CHECKED_ENGINE_FIELDS:
                if getattr(archived, f) != getattr(local, f):
                    raise EngineMismatchError(
                        f, getattr(archived, f), getattr(local, f),
                        "this archive was written by llmzip 0.1's float engine, whose "
                        "results depend on the machine: decode it where it was written "
                        "and compress it again with the exact engine (the default since "
                        "0.2), whose archives open anywhere; or use "
                        "--ignore-engine-mismatch to try anyway (the checksum still "
                        "guards the output)")
        from dataclasses import replace
        profile = replace(archived, threads=self.threads or archived.threads)
        if profile.dtype not in ("float32", "bfloat16") or not 8 < profile.precision <= 24:
            raise FormatError(f"unsupported dtype/precision {profile.dtype}/{profile.precision}")
        if profile.attention not in ATTENTIONS:
            raise FormatError(f"unsupported attention {profile.attention!r} (this build "
                              f"knows {', '.join(ATTENTIONS)})")
        return Engine(model, profile, self.memory_limit)

    def _exact_engine(self, eng: dict, model: LoadedModel) -> ExactEngine:
        known = set(ExactProfile.__dataclass_fields__)
        try:
            profile = ExactProfile(**{k: v for k, v in eng.items() if k in known})
        except TypeError as e:
            raise FormatError(f"bad engine profile: {e}") from None
        if profile.arith != ARITH_VERSION:
            raise FormatError(f"the archive's exact engine uses arithmetic version "
                              f"{profile.arith!r}; this llmzip computes version "
                              f"{ARITH_VERSION}: decode it with the llmzip that wrote it")
        if (not isinstance(profile.precision, int) or not 8 < profile.precision <= 24
                or not isinstance(profile.weights, str) or not profile.weights
                or not _window_ok(profile.window, profile.stride,
                                  model.config.context_length)
                or profile.slide not in SLIDES.values()
                or (profile.slide and not profile.window)):
            raise FormatError(f"bad exact engine profile {eng!r}")
        AdaptConfig.from_dict(profile.adapt)   # FormatError for unknown models or rates
        engine = ExactEngine(model, profile, kernel=self.kernel, threads=self.threads,
                             memory_limit=self.memory_limit)
        engine.check_weights()              # a model that gives other integers: refuse now
        return engine

    def _engine_lazy(self, header: dict, cache: dict) -> Engine:
        if "engine" not in cache:
            if not isinstance(header.get("model"), dict):
                raise FormatError("archive has model-coded chunks but names no model")
            cache["engine"] = self._engine_for(header, self._model_for(header))
            self.engine = cache["engine"]   # the last archive's engine (kernel, threads)
        return cache["engine"]

    def stream(self, f, progress=None):
        """Decode an archive from a file object chunk by chunk, yielding original bytes.

        Each chunk is checked (CRCs) before it is yielded; the whole-content SHA-256 and
        the footer are checked at the end, and a truncated or damaged stream raises there
        instead of ending quietly.
        """
        r = ct.ArchiveReader(f)
        header = r.read_header()
        if header.get("mode") == "online":
            raise FormatError("online archives decode one-shot only (llmzip.decompress)")
        _check_mode(header)
        _refuse_tree(header)
        cache: dict = {}
        h = hashlib.sha256()
        n_chunks = total = 0
        while (c := r.next_chunk()) is not None:
            n_chunks += 1
            if n_chunks > ct.MAX_CHUNKS:
                raise LimitError("chunk count", n_chunks, ct.MAX_CHUNKS)
            coded = r.read_coded(c)
            engine = self._engine_lazy(header, cache) if c.method == ct.METHOD_MODEL else None
            raw = _checked(c, decode_chunk(c, coded, engine, progress))
            h.update(raw)
            total += len(raw)
            yield raw
        footer = r.read_footer()
        if footer.n_chunks != n_chunks or footer.original_len != total:
            raise FormatError("footer does not match the chunks read")
        if h.digest() != footer.sha256:
            raise ChecksumError("whole content (SHA-256)", footer.sha256.hex(), h.hexdigest())
        r.check_end()

    def open_index(self, f) -> ct.ArchiveInfo:
        """Header, chunk index and footer of an archive (bytes, or a seekable binary file
        object positioned at its start), without decoding anything: each chunk's original
        offset and length and where its coded bytes lie (ChunkInfo.orig_offset, raw_len,
        offset). Refuses archives that cannot be decoded by parts (online mode)."""
        if isinstance(f, (bytes, bytearray, memoryview)):
            info = ct.scan(f)
        else:
            start = f.tell()
            info = ct.scan(f, ct.file_length(f))
            f.seek(start)
            for c in info.chunks:               # offsets relative to the file, not to start
                c.offset += start
        if info.header.get("mode") == "online":
            raise UsageError("online archives decode whole only: each byte's model depends "
                             "on every byte before it (use llmzip.decompress)")
        _check_mode(info.header)
        return info

    def decompress_chunk(self, info: ct.ArchiveInfo, c: ct.ChunkInfo, coded: bytes,
                         progress=None) -> bytes:
        """One chunk's original bytes from its coded bytes, every CRC checked."""
        actual = ct.crc32(coded)
        if len(coded) != c.coded_len or actual != c.coded_crc:
            raise ChecksumError("chunk data", f"{c.coded_crc:08x}", f"{actual:08x}")
        held = getattr(self, "_held", None)     # one engine per archive, kept while reused
        if held is None or held[0] is not info:
            held = self._held = (info, {})
        engine = self._engine_lazy(info.header, held[1]) if c.method == ct.METHOD_MODEL \
            else None
        raw = _checked(c, decode_chunk(c, coded, engine, progress))
        self.chunks_decoded += 1
        return raw

    def decompress_range(self, f, start: int, length: int, progress=None,
                         info: ct.ArchiveInfo | None = None) -> bytes:
        """Original bytes start .. start+length-1 of an archive (bytes, or a seekable binary
        file object at the archive's start), decoding only the chunks that hold them.

        Every record CRC is checked (by the index scan) and every decoded chunk's coded
        and content CRCs; the whole-content SHA-256 needs the whole output, so it is not.
        A range past the end is cut at the end, as reading a file would. `info`: the
        archive's open_index(f), if already read.
        """
        if start < 0 or length < 0:
            raise UsageError(f"range start and length must be >= 0, not {start}:{length}")
        if info is None:
            info = self.open_index(f)
        self.chunks_decoded = 0
        total = info.footer.original_len
        if start > total:
            raise UsageError(f"range starts at byte {start}, past the end of the original "
                             f"({total} bytes)")
        length = min(length, total - start)
        out = []
        for c in ct.chunks_for_range(info, start, length):
            if isinstance(f, (bytes, bytearray, memoryview)):
                coded = bytes(f[c.offset:c.offset + c.coded_len])
            else:
                f.seek(c.offset)
                coded = f.read(c.coded_len)
            raw = self.decompress_chunk(info, c, coded, progress)
            lo = max(start - c.orig_offset, 0)
            hi = min(start + length - c.orig_offset, c.raw_len)
            out.append(raw[lo:hi])
        return b"".join(out)

    def decompress(self, blob: bytes, progress=None) -> bytes:
        info = ct.scan(blob)                        # validates structure, no decoding yet
        header = info.header
        _refuse_tree(header)
        if header.get("mode") == "online" and header.get("format") == FORMAT_NAME:
            from .online import decompress_online
            return decompress_online(blob, threads=self.threads, progress=progress,
                                     allow_engine_mismatch=self.allow_engine_mismatch)
        _check_mode(header)
        coded_chunks = []
        for c in info.chunks:                       # every CRC before any slow decoding
            coded = bytes(blob[c.offset:c.offset + c.coded_len])
            actual = ct.crc32(coded)
            if actual != c.coded_crc:
                raise ChecksumError("chunk data", f"{c.coded_crc:08x}", f"{actual:08x}")
            coded_chunks.append(coded)
        cache: dict = {}
        if any(c.method == ct.METHOD_MODEL for c in info.chunks):
            self._engine_lazy(header, cache)       # model problems before any decoding
        out = []
        self.chunks_decoded = 0
        for c, coded in zip(info.chunks, coded_chunks):
            engine = cache.get("engine")
            out.append(_checked(c, decode_chunk(c, coded, engine, progress)))
            self.chunks_decoded += 1
        data = b"".join(out)
        digest = ct.sha256(data)
        if digest != info.footer.sha256:
            raise ChecksumError("whole content (SHA-256)", info.footer.sha256.hex(),
                                digest.hex())
        return data


def _refuse_tree(header: dict) -> None:
    if "tree" in header:
        raise UsageError("this is a directory archive: restore it with `llmzip decompress` "
                         "or llmzip.extract(archive, folder); one file with --file NAME or "
                         "llmzip.extract_file")


def _check_mode(header: dict) -> None:
    if header.get("format") != FORMAT_NAME or header.get("mode") != "prior":
        raise FormatError(f"unsupported archive mode {header.get('mode')!r}")


def _checked(c: ct.ChunkInfo, raw: bytes) -> bytes:
    actual = ct.crc32(raw)
    if len(raw) != c.raw_len or actual != c.raw_crc:
        raise ChecksumError("chunk content", f"{c.raw_crc:08x}", f"{actual:08x}")
    return raw


def decode_chunk(c: ct.ChunkInfo, coded: bytes, engine: Engine | None, progress) -> bytes:
    if c.method in CLASSICAL_METHODS:
        raw = decode_classical(c.method, coded, c.raw_len)
        if progress:
            progress(len(raw))
        return raw
    if engine is None:
        raise FormatError(f"chunk method {c.method_name} cannot be decoded here")
    # model chunk: segment table, then range-coded words
    n_seg, pos = _get_varint(coded, 0)
    total, pos = _get_varint(coded, pos)
    adjust, pos = _get_varint(coded, pos)
    if not 1 <= n_seg <= MAX_SEGMENTS:
        raise LimitError("segments in a chunk", n_seg, MAX_SEGMENTS)
    if total > 2 * c.raw_len:              # a token is >= 1 byte (an escape pair is 2 for 1)
        raise LimitError("tokens in a chunk", total, 2 * c.raw_len)
    if adjust > 2 or total < n_seg:
        raise FormatError("bad segment table in model chunk")
    lengths = balanced(total, n_seg)
    lengths[-1] += adjust - 1
    if lengths[-1] < 1:
        raise FormatError("bad segment table in model chunk")
    tok = tokenizer_for(engine.model)
    step_progress = (lambda tokens: progress(len(tok.decode(tokens)))) if progress else None
    try:
        segments = decode_segments(engine, lengths, coded[pos:], step_progress)
        return tok.decode(np.concatenate(segments)) if segments else b""
    except FormatError as e:
        # the coded bytes passed their CRC, so tokens that no encoder writes mean that this
        # engine's tables differ from the encoder's (a float-engine archive decoded on
        # another kind of machine with the engine check relaxed): the content is wrong
        raise ChecksumError("chunk content", f"{c.raw_crc:08x}",
                            f"tokens no encoder writes ({e})") from None


def decompress(blob: bytes, model: str | LoadedModel | None = None, **kw) -> bytes:
    """One-shot: the original bytes of an archive; raises an ArchiveError on any problem."""
    return Decompressor(model, **kw).decompress(bytes(blob))


def decompress_range(archive, start: int, length: int,
                     model: str | LoadedModel | None = None, **kw) -> bytes:
    """Original bytes start .. start+length-1 of an archive (bytes, a path or a seekable
    binary file object), decoding only the chunks that hold them (see
    Decompressor.decompress_range)."""
    dec = Decompressor(model, **kw)
    if isinstance(archive, (str, os.PathLike)):
        with open(archive, "rb") as f:
            return dec.decompress_range(f, start, length)
    return dec.decompress_range(archive, start, length)
