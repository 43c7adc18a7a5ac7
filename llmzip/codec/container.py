"""The .llmz archive format: write, read, validate. Byte layout: docs/format.md.

    header   magic(8) version(u16) flags(u16) body_len(u32) body(DEFLATE JSON) crc32(u32)
             (the DEFLATE stream uses a preset dictionary: HEADER_DICT in version 2,
             HEADER_DICT_V3 in versions 3 and 4, HEADER_DICT_V5 in versions 5 and 6,
             HEADER_DICT_V7 in versions 7 and 8, HEADER_DICT_V9 from version 9)
    chunk*   method(u8) raw_len(u32) coded_len(u32) raw_crc(u32) coded_crc(u32) rec_crc(u32)
             coded bytes
    end      method 0xFF
    footer   n_chunks(u32) original_len(u64) sha256(32) crc32(u32) end magic(4)

All integers little-endian. Every length is checked against its limit and against the
bytes actually left before anything is allocated.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import (ChecksumError, FormatError, LimitError, TruncatedError,
                      UnsupportedVersionError)

MAGIC = b"\x89LLMZ\r\n\x1a"          # 0x89 first: not ASCII, not valid UTF-8 (like PNG)
END_MAGIC = b"LMZ\x00"
VERSION = 9                           # the newest this llmzip writes (see version_for)
READ_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9)  # what it reads: 1 differs only in the header body;
                                      # 3 adds engine.attention (2 and 1 mean torch-f32);
                                      # 4 adds the xz chunk method; 5 the exact engine;
                                      # 6 directory archives (header key "tree"); 7 the
                                      # exact engine's sliding window and adaptive models
                                      # (engine.window, .stride, .adapt); 8 the window
                                      # whose keys and values shift (engine.slide) and
                                      # the n-gram model (engine.adapt.ngram); 9 any of
                                      # these with a model or online chunk, its header
                                      # compressed with HEADER_DICT_V9

METHOD_STORED, METHOD_ZSTD, METHOD_MODEL, METHOD_ONLINE, METHOD_XZ = 0, 1, 2, 3, 4
METHOD_END = 0xFF
METHOD_NAMES = {METHOD_STORED: "stored", METHOD_ZSTD: "zstd", METHOD_MODEL: "model",
                METHOD_ONLINE: "online", METHOD_XZ: "xz"}
METHOD_SINCE = {METHOD_XZ: 4}         # methods newer than version 1: the first version


def version_for(methods, tree: bool = False) -> int:
    """The version an archive with these chunk methods is written as. Without a model or
    online chunk, the oldest that can express it: 3, 4 when an xz chunk is present, 6 for
    a directory archive, so it still opens in an older llmzip. With one, 9 (llmzip 0.10):
    such a header names a model and an engine, and version 9's dictionary
    (HEADER_DICT_V9) holds today's typical headers, which saves about 100 bytes an
    archive; an older llmzip refuses it cleanly (UnsupportedVersionError) instead of
    inflating it with the wrong dictionary. (llmzip 0.9 wrote such archives as 5, 7 or 8
    by the exact engine's features: docs/format.md.)"""
    if METHOD_MODEL in methods or METHOD_ONLINE in methods:
        return 9
    return max([6 if tree else 3] + [METHOD_SINCE.get(m, 0) for m in methods])


MAX_HEADER_BODY = 1 << 16             # 64 KiB of header JSON (compressed and inflated)
MAX_CHUNK_RAW = 1 << 26               # 64 MiB of original bytes per chunk
MAX_CHUNKS = 1 << 20
CODED_SLACK = 1 << 10


def max_coded_len(method: int, raw_len: int) -> int:
    """Most coded bytes a chunk may claim: a model chunk spends at most 24 bits on each of
    at most 2 tokens per byte (plus its segment table); other methods barely expand."""
    if method == METHOD_MODEL:
        return 8 * raw_len + CODED_SLACK
    return raw_len + CODED_SLACK

# Version 2 headers are raw DEFLATE with this preset dictionary (RFC 1951 back-references
# into text "before" the stream): typical prior and online headers, so a header costs
# about its varying values (fingerprint, lengths) rather than its key names, 283 -> 64
# bytes for a SmolLM2 archive. Frozen with format version 2: its SHA-256 is in
# docs/format.md and checked by tests/test_container.py.
HEADER_DICT = (
    b'{"engine":{"batch":4,"constriction":"0.5.0","cpu":"avx2,avx512f,avx512_bf16,amx_bf16'
    b',amx_tile","deterministic":true,"dtype":"float32","precision":24,"seg_len":96,"threa'
    b'ds":1,"torch":"2.13.0+cpu"},"format":"llmzip","llmzip":"0.1.0","mode":"online","onli'
    b'ne":{"config":{"beta1":0.9,"beta2":0.98,"ctx":64,"eps":1e-08,"ffn_hidden":256,"grad_'
    b'clip":1.0,"init_std":0.02,"lr":0.006,"lr_min":0.1,"n_embd":96,"n_head":4,"n_layer":2'
    b',"new":32,"replay":0,"replay_steps":false,"streams":4,"train_on":"all","warmup":20},'
    b'"n_params":246240,"piece":67108864,"pieces":[{"bytes":1115394,"complete":true,"curve'
    b'":{"bins":256,"file":"","scale":30,"seen":""},"ideal_bits":0.0,"loss_bits":0.0,"meth'
    b'od":"online"}],"precision":24,"preset":"s","seconds":0.0,"seed":0}}{"engine":{"batch'
    b'":64,"constriction":"0.5.0","cpu":"avx2,avx512f,avx512_bf16,amx_bf16,amx_tile","dtyp'
    b'e":"bfloat16","precision":24,"seg_len":2048,"threads":2,"torch":"2.13.0+cpu"},"forma'
    b't":"llmzip","llmzip":"0.1.0","mode":"prior","model":{"arch":"gemma3","file":"gemma-3'
    b'-270m-q4_k_m.gguf","fingerprint":"","name":"gemma3-270m","params":268098176,"vocab":'
    b'262144}}{"engine":{"batch":64,"constriction":"0.5.0","cpu":"avx2,avx512f,avx512_bf16'
    b',amx_bf16,amx_tile","dtype":"float32","precision":24,"seg_len":2048,"threads":1,"tor'
    b'ch":"2.13.0+cpu"},"format":"llmzip","llmzip":"0.1.0","mode":"prior","model":{"arch":'
    b'"llama","file":"SmolLM2-135M-Instruct.Q4_1.gguf","fingerprint":"","name":"smollm2-13'
    b'5m","params":134515008,"vocab":49152}}'
)
HEADER_DICT_SHA256 = "3c34fd0fd76b3600161ecfbf096c9289bd0e9927419c2e0dd661096256bfd079"
# Version 3: the same dictionary followed by a default header of version 3 (SmolLM2, the
# bf16 attention kernel), so the new engine.attention key costs nothing either. Frozen
# with format version 3 (SHA-256 of the whole in docs/format.md, checked by the tests).
HEADER_DICT_V3 = HEADER_DICT + (
    b'{"engine":{"attention":"bf16-kernel","batch":64,"constriction":"0.5.0","cpu":"avx2,av'
    b'x512f,avx512_bf16","dtype":"bfloat16","precision":24,"seg_len":2048,"threads":2,"torc'
    b'h":"2.13.0+cpu"},"format":"llmzip","llmzip":"0.1.0","mode":"prior","model":{"arch":"l'
    b'lama","file":"SmolLM2-135M-Instruct.Q4_1.gguf","fingerprint":"","name":"smollm2-135m'
    b'","params":134515008,"vocab":49152}}'
)
HEADER_DICT_V3_SHA256 = "4eceb9bd5b6241dedaff0ad35107bb2babd776d1110d2af3cc918b694a13828f"
# Version 5: version 3's dictionary followed by a default header of the exact engine
# (SmolLM2), the last and so the cheapest thing to refer back to. Frozen with format
# version 5 (SHA-256 in docs/format.md, checked by the tests).
HEADER_DICT_V5 = HEADER_DICT_V3 + (
    b'{"engine":{"arith":1,"batch":64,"kind":"exact","precision":24,"seg_len":2048,"weights'
    b'":""},"format":"llmzip","llmzip":"0.2.0","mode":"prior","model":{"arch":"llama","file"'
    b':"SmolLM2-135M-Instruct.Q4_1.gguf","fingerprint":"","name":"smollm2-135m","params":1'
    b'34515008,"vocab":49152}}'
)
HEADER_DICT_V5_SHA256 = "62e5926137b64a915610c7aefc7f23e0b3126f33eeead1e2ed665c875bd1c0ee"

# Version 7: version 5's dictionary followed by a default header of level 6 (SmolLM2 with
# the sliding window and the adaptive models), so their keys cost almost nothing. Frozen
# with format version 7 (SHA-256 in docs/format.md, checked by the tests).
HEADER_DICT_V7 = HEADER_DICT_V5 + (
    b'{"engine":{"adapt":{"bias":14000,"match":20000},"arith":1,"batch":64,"kind":"exact","p'
    b'recision":24,"seg_len":16384,"stride":1024,"weights":"","window":4096},"format":"llmzi'
    b'p","llmzip":"0.3.0","mode":"prior","model":{"arch":"llama","file":"SmolLM2-135M-Instru'
    b'ct.Q4_1.gguf","fingerprint":"","name":"smollm2-135m","params":134515008,"vocab":49152}'
    b'}'
)
HEADER_DICT_V7_SHA256 = "8427c619910dd953b8d494e437b6a85ec09be056ae240e379e268b2e3369df25"

# Version 9: version 7's dictionary followed by today's typical headers, whole: an online
# one (preset s, bitwise mixer), level 1 and level 6 of SmolLM2 and level 9 of Gemma 3,
# with the catalog models' fingerprints and integer-weight hashes, so the header of an
# archive made with a catalog model costs only what varies (llmzip 0.10: 114 -> 7
# bytes at level 6). The default level's header comes last: the nearest, cheapest to
# refer back to. Frozen with format version 9 (SHA-256 in docs/format.md, tested).
HEADER_DICT_V9 = HEADER_DICT_V7 + (
    b'{"engine":{"attention":"torch-f32","batch":8,"constriction":"0.5.0","cpu":"avx2,avx512'
    b'f,avx512_bf16,amx_bf16,amx_tile","deterministic":true,"dtype":"float32","precision":24'
    b',"seg_len":96,"threads":2,"torch":"2.13.0+cpu"},"format":"llmzip","llmzip":"0.10.0","m'
    b'ode":"online","online":{"config":{"beta1":0.9,"beta2":0.98,"ctx":64,"eps":1e-08,"ffn_h'
    b'idden":256,"grad_clip":1.0,"init_std":0.02,"lr":0.006,"lr_min":0.1,"mix":33554,"mix_ma'
    b'tch":6554,"mix_order":6,"mixer":1,"n_embd":96,"n_head":4,"n_layer":2,"new":32,"replay"'
    b':2,"replay_steps":true,"streams":8,"train_on":"all","warmup":20},"n_params":246240,"pi'
    b'ece":67108864,"pieces":[{"bytes":1115394,"complete":true,"curve":{"bins":64,"file":"",'
    b'"scale":30,"seen":""},"ideal_bits":0.0,"loss_bits":0.0,"method":"online","mix_seconds"'
    b':0.0}],"precision":24,"preset":"s","seconds":0.0,"seed":0}}{"engine":{"arith":1,"batch'
    b'":64,"kind":"exact","precision":24,"seg_len":2048,"weights":"dea72970ce9441da"},"forma'
    b't":"llmzip","llmzip":"0.10.0","mode":"prior","model":{"arch":"llama","file":"SmolLM2-1'
    b'35M-Instruct.Q4_1.gguf","fingerprint":"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc'
    b'70ea373728110db53","name":"smollm2-135m","params":134515008,"vocab":49152}}{"engine":{'
    b'"adapt":{"bias":14000,"match":20000,"ngram":6000,"tau":2000000},"arith":1,"batch":64,"'
    b'kind":"exact","precision":24,"seg_len":65536,"slide":"shift","stride":512,"weights":"a'
    b'd11c8dc9be807d3","window":8192},"format":"llmzip","llmzip":"0.10.0","mode":"prior","mo'
    b'del":{"arch":"gemma3","file":"gemma-3-270m-q4_k_m.gguf","fingerprint":"a5fd3b62230aa5e'
    b'c60212297dc9d20eaa70578ac519e00d93a17e44c087a6818","name":"gemma3-270m","params":26809'
    b'8176,"vocab":262144}}{"engine":{"adapt":{"bias":14000,"match":20000,"ngram":6000},"ari'
    b'th":1,"batch":64,"kind":"exact","precision":24,"seg_len":16384,"slide":"shift","stride'
    b'":256,"weights":"dea72970ce9441da","window":4096},"format":"llmzip","llmzip":"0.10.0",'
    b'"mode":"prior","model":{"arch":"llama","file":"SmolLM2-135M-Instruct.Q4_1.gguf","finge'
    b'rprint":"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53","name":"smo'
    b'llm2-135m","params":134515008,"vocab":49152}}'
)
HEADER_DICT_V9_SHA256 = "ede70e387666efb50b3e5962c5a94a56cc245eb94644421e7391bccad81da86b"


def _header_dict(version: int) -> bytes:
    if version >= 9:
        return HEADER_DICT_V9
    if version >= 7:                  # version 8 adds no dictionary of its own
        return HEADER_DICT_V7
    if version >= 5:                  # version 6 adds no dictionary of its own
        return HEADER_DICT_V5
    return HEADER_DICT_V3 if version >= 3 else HEADER_DICT if version == 2 else b""


_HEAD = struct.Struct("<8sHHI")
_CHUNK = struct.Struct("<BIIII")      # method raw_len coded_len raw_crc coded_crc
_FOOT_BODY = struct.Struct("<IQ32s")  # n_chunks original_len sha256
RECORD_LEN = _CHUNK.size + 4          # 21 bytes: record fields and their CRC


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class ChunkInfo:
    method: int
    raw_len: int
    coded_len: int
    raw_crc: int
    coded_crc: int
    offset: int = 0          # where the coded bytes start in the archive
    orig_offset: int = 0     # where the chunk's bytes start in the original (set by scan)

    @property
    def record_offset(self) -> int:
        """Where the chunk's record starts in the archive."""
        return self.offset - RECORD_LEN

    @property
    def method_name(self) -> str:
        return METHOD_NAMES.get(self.method, f"unknown({self.method})")


@dataclass
class Footer:
    n_chunks: int
    original_len: int
    sha256: bytes


@dataclass
class ArchiveInfo:
    header: dict
    version: int = VERSION
    header_len: int = 0      # bytes of the header as stored (magic to header CRC)
    chunks: list = field(default_factory=list)
    footer: Footer | None = None
    archive_len: int = 0


# ----------------------------------------------------------------------------- writing

def header_bytes(header: dict, version: int = VERSION) -> bytes:
    if not 2 <= version <= VERSION:
        raise ValueError(f"cannot write format version {version}")
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(text) > MAX_HEADER_BODY:
        raise LimitError("header size", len(text), MAX_HEADER_BODY)
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY,
                         _header_dict(version))
    body = z.compress(text) + z.flush()
    head = _HEAD.pack(MAGIC, version, 0, len(body)) + body
    return head + struct.pack("<I", crc32(head[8:]))


def chunk_bytes(method: int, raw: bytes, coded: bytes) -> bytes:
    rec = _CHUNK.pack(method, len(raw), len(coded), crc32(raw), crc32(coded))
    return rec + struct.pack("<I", crc32(rec)) + coded


def footer_bytes(n_chunks: int, original_len: int, sha256: bytes) -> bytes:
    body = _FOOT_BODY.pack(n_chunks, original_len, sha256)
    return bytes([METHOD_END]) + body + struct.pack("<I", crc32(body)) + END_MAGIC


# ----------------------------------------------------------------------------- reading

class ArchiveReader:
    """Sequential, validating reader over a file object (or bytes).

    ``total_len`` (if known) bounds every length before it is trusted.
    """

    def __init__(self, f, total_len: int | None = None):
        if isinstance(f, (bytes, bytearray, memoryview)):
            total_len = len(f)
            f = io.BytesIO(f)
        self.f = f
        self.total_len = total_len
        self.pos = 0
        self.version = 0          # the archive's format version, once the header is read

    def _left(self) -> int | None:
        return None if self.total_len is None else self.total_len - self.pos

    def _read(self, n: int, what: str) -> bytes:
        left = self._left()
        if left is not None and n > left:
            raise TruncatedError(what, n, left)
        data = self.f.read(n)
        if len(data) != n:
            raise TruncatedError(what, n, len(data))
        self.pos += n
        return data

    def read_header(self) -> dict:
        head = self._read(_HEAD.size, "header")
        magic, version, flags, body_len = _HEAD.unpack(head)
        if magic != MAGIC:
            raise FormatError("not an llmzip archive (bad magic bytes)")
        if version not in READ_VERSIONS:
            raise UnsupportedVersionError(version, READ_VERSIONS)
        if body_len > MAX_HEADER_BODY:
            raise LimitError("header size", body_len, MAX_HEADER_BODY)
        self.version = version
        body = self._read(body_len, "header body")
        (crc,) = struct.unpack("<I", self._read(4, "header CRC"))
        actual = crc32(head[8:] + body)
        if crc != actual:
            raise ChecksumError("header", f"{crc:08x}", f"{actual:08x}")
        if flags != 0:
            raise FormatError(f"unknown header flags {flags:#x}")
        zdict = _header_dict(version)
        z = zlib.decompressobj(-15, zdict) if zdict else zlib.decompressobj(-15)
        try:
            text = z.decompress(body, MAX_HEADER_BODY)
        except zlib.error as e:
            raise FormatError(f"header body is not valid DEFLATE data: {e}") from None
        if z.unconsumed_tail or not z.eof or z.unused_data:
            raise FormatError("header body does not inflate to one bounded JSON text")
        try:
            header = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"header body is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise FormatError("header body is not a JSON object")
        return header

    def next_chunk(self) -> ChunkInfo | None:
        """The next chunk record (coded bytes not yet read), or None at the end marker."""
        method = self._read(1, "chunk method")[0]
        if method == METHOD_END:
            return None
        rest = self._read(_CHUNK.size - 1 + 4, "chunk record")
        rec = bytes([method]) + rest[:-4]
        (rec_crc,) = struct.unpack("<I", rest[-4:])
        if crc32(rec) != rec_crc:
            raise ChecksumError("chunk record", f"{rec_crc:08x}", f"{crc32(rec):08x}")
        _, raw_len, coded_len, raw_crc, coded_crc = _CHUNK.unpack(rec)
        if method not in METHOD_NAMES:
            raise FormatError(f"unknown chunk method {method}")
        if METHOD_SINCE.get(method, 0) > self.version:
            raise FormatError(f"chunk method {METHOD_NAMES[method]} in a version "
                              f"{self.version} archive (it needs version "
                              f"{METHOD_SINCE[method]})")
        if raw_len > MAX_CHUNK_RAW:
            raise LimitError("chunk length", raw_len, MAX_CHUNK_RAW)
        limit = max_coded_len(method, raw_len)
        if coded_len > limit:
            raise LimitError("coded chunk length", coded_len, limit)
        if method == METHOD_STORED and coded_len != raw_len:
            raise FormatError("stored chunk whose coded and raw lengths differ")
        left = self._left()
        if left is not None and coded_len > left:
            raise TruncatedError("chunk data", coded_len, left)
        return ChunkInfo(method, raw_len, coded_len, raw_crc, coded_crc, self.pos)

    def read_coded(self, chunk: ChunkInfo) -> bytes:
        coded = self._read(chunk.coded_len, "chunk data")
        actual = crc32(coded)
        if actual != chunk.coded_crc:
            raise ChecksumError("chunk data", f"{chunk.coded_crc:08x}", f"{actual:08x}")
        return coded

    def skip_coded(self, chunk: ChunkInfo) -> None:
        left = self._left()
        if left is not None and chunk.coded_len > left:
            raise TruncatedError("chunk data", chunk.coded_len, left)
        if hasattr(self.f, "seek") and self.f.seekable():
            self.f.seek(chunk.coded_len, io.SEEK_CUR)
            self.pos += chunk.coded_len
        else:
            self.read_coded(chunk)

    def read_footer(self) -> Footer:
        body = self._read(_FOOT_BODY.size, "footer")
        (crc,) = struct.unpack("<I", self._read(4, "footer CRC"))
        if crc32(body) != crc:
            raise ChecksumError("footer", f"{crc:08x}", f"{crc32(body):08x}")
        end = self._read(4, "end magic")
        if end != END_MAGIC:
            raise FormatError("bad end magic")
        n, length, sha = _FOOT_BODY.unpack(body)
        if n > MAX_CHUNKS:
            raise LimitError("chunk count", n, MAX_CHUNKS)
        return Footer(n, length, sha)

    def check_end(self) -> None:
        """Trailing data policy: refuse anything after the footer."""
        extra = self.f.read(1)
        if extra:
            raise FormatError("trailing data after the archive footer")


def scan(data_or_file, total_len: int | None = None) -> ArchiveInfo:
    """Read header, chunk table and footer without decoding any chunk."""
    r = ArchiveReader(data_or_file, total_len)
    info = ArchiveInfo(header=r.read_header(), version=r.version)
    info.header_len = r.pos
    orig = 0
    while (c := r.next_chunk()) is not None:
        if len(info.chunks) >= MAX_CHUNKS:
            raise LimitError("chunk count", len(info.chunks) + 1, MAX_CHUNKS)
        r.skip_coded(c)
        c.orig_offset = orig
        orig += c.raw_len
        info.chunks.append(c)
    info.footer = r.read_footer()
    check_footer_against_chunks(info.footer, info.chunks)
    r.check_end()
    info.archive_len = r.pos
    return info


def file_length(f) -> int | None:
    """Bytes in a seekable file object from its current position to its end (else None)."""
    try:
        if not f.seekable():
            return None
        here = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


def chunks_for_range(info: ArchiveInfo, start: int, length: int) -> list:
    """The chunks (ChunkInfo, in order) that hold original bytes start .. start+length-1:
    the random-access index is the chunk records themselves (docs/format.md, 'Random
    access'), found by scan() with one seek per chunk."""
    if length <= 0:
        return []
    end = start + length
    return [c for c in info.chunks
            if c.raw_len and c.orig_offset < end and c.orig_offset + c.raw_len > start]


def check_footer_against_chunks(footer: Footer, chunks: list) -> None:
    if footer.n_chunks != len(chunks):
        raise FormatError(f"footer says {footer.n_chunks} chunks, archive has {len(chunks)}")
    total = sum(c.raw_len for c in chunks)
    if footer.original_len != total:
        raise FormatError(f"footer says {footer.original_len} bytes, chunks hold {total}")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
