"""Exact bytes <-> token ids for a model's vocabulary: byte-level BPE (GPT-2 style, as in
GGUF) and SentencePiece-style BPE (Gemma).

Encoding uses the ``tokenizers`` library for valid UTF-8 text; bytes that are not valid
UTF-8 become the vocabulary's single-byte tokens. Decoding never goes through UTF-8: every
id maps to a fixed byte string, so ``decode(encode(x)) == x`` for every byte string.
``tokenizer_for(model)`` builds a loaded model's tokenizer once per model file.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from ..engine.models.vocab import bytes_to_unicode
from ..errors import FormatError, UnsupportedModelError

_TOKENIZERS: dict = {}              # model file SHA-256 -> tokenizer
_TOKENIZERS_LOCK = threading.Lock()


def tokenizer_for(model) -> "ByteTokenizer | SpmTokenizer":
    """The exact tokenizer of a loaded model (engine.models.registry.LoadedModel), built
    from the vocabulary in its GGUF file on first use and cached per file (its SHA-256,
    which covers the vocabulary); raises UnsupportedModelError for a vocabulary that
    cannot code every byte string."""
    with _TOKENIZERS_LOCK:
        tok = _TOKENIZERS.get(model.fingerprint)
        if tok is None:
            tok = _TOKENIZERS[model.fingerprint] = build_tokenizer(model.contents)
        return tok


def build_tokenizer(contents) -> "ByteTokenizer | SpmTokenizer":
    """A tokenizer from a GGUF file's vocabulary data (gguf_loader.GGUFContents)."""
    if contents.tok_model == "llama":       # SentencePiece-style vocabulary (Gemma)
        return SpmTokenizer(contents.tokens, contents.scores, contents.token_types)
    return ByteTokenizer(contents.tokens, contents.merges, contents.pre,
                         contents.token_types, special_ids=(contents.bos_id,))


def _chars_using(byte_values) -> str:
    """A regex character-class body matching every character whose UTF-8 form contains
    one of `byte_values` (as a single byte or as the lead byte of a sequence)."""
    parts = []
    for b in sorted(byte_values):
        if b < 0x80:
            lo, hi = b, b
        elif 0xC2 <= b <= 0xDF:
            lo = (b & 0x1F) << 6
            hi = lo + 0x3F
        elif 0xE0 <= b <= 0xEF:
            lo = (b & 0x0F) << 12
            hi = lo + 0xFFF
        elif 0xF0 <= b <= 0xF4:
            lo = (b & 0x07) << 18
            hi = min(lo + 0x3FFFF, 0x10FFFF)
        elif b in (0xC0, 0xC1) or b >= 0xF5:
            continue                     # never part of valid UTF-8
        else:                            # a continuation byte: too many characters to list
            raise UnsupportedModelError(
                f"vocabulary has no token for UTF-8 continuation byte {b:#x}")
        parts.append(re.escape(chr(lo)) + ("-" + re.escape(chr(hi)) if hi > lo else ""))
    return "".join(parts)


class _ExactTokenizer:
    """What both tokenizers share: text runs go through the `tokenizers` model, runs the
    vocabulary cannot take (`self._raw_run`) go through `_encode_raw_bytes`."""

    tokens: list
    _tok: object
    _raw_run: re.Pattern

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, data: bytes) -> np.ndarray:
        """Token ids (int64) for any byte string."""
        text = data.decode("utf-8", errors="surrogateescape")
        out: list[np.ndarray] = []
        pos = 0
        for m in self._raw_run.finditer(text):
            if m.start() > pos:
                out.append(self._encode_text(text[pos:m.start()]))
            raw = m.group().encode("utf-8", errors="surrogateescape")
            out.append(self._encode_raw_bytes(raw))
            pos = m.end()
        if pos < len(text):
            out.append(self._encode_text(text[pos:]))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _encode_text(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def _encode_raw_bytes(self, raw: bytes) -> np.ndarray:
        raise NotImplementedError


class ByteTokenizer(_ExactTokenizer):
    """Byte-level BPE built from a vocabulary (id -> token string) and merge rules."""

    def __init__(self, tokens: list[str], merges: list[str], pre: str = "gpt2",
                 token_types: list[int] | None = None, special_ids: tuple = ()):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        self.tokens = tokens
        self.pre = pre
        vocab = {}
        for i, t in enumerate(tokens):
            vocab.setdefault(t, i)          # first id wins if a string repeats
        b2u = bytes_to_unicode()
        # Byte values that never occur in valid UTF-8 (C0, C1, F5..FF) often have no token.
        # Such a byte b is written as two tokens: ESC, then the byte token of b ^ 0x40
        # (C0/C1 -> 80/81, F5..FF -> B5..BF: continuation bytes; rare ASCII controls -> letters).
        # ESC is a control token (type 3) that byte-level BPE never produces.
        self.escaped = frozenset(b for b, ch in b2u.items() if ch not in vocab)
        self.esc_id = -1
        if self.escaped:
            if any(b2u[b ^ 0x40] not in vocab for b in self.escaped):  # noqa: E501
                raise UnsupportedModelError(
                    f"vocabulary lacks single-byte tokens for {len(self.escaped)} byte values, "
                    f"beyond those never seen in UTF-8; llmzip needs them to code any byte string")
            controls = [i for i, ty in enumerate(token_types or []) if ty == 3
                        and i not in special_ids]
            if not controls:
                raise UnsupportedModelError(
                    "vocabulary lacks some single-byte tokens and has no control token to "
                    "escape them with")
            self.esc_id = controls[0]
        # Runs routed around the BPE: bytes that are not valid UTF-8 (surrogate-escaped) and
        # ASCII bytes the vocabulary has no token for.
        self._raw_run = re.compile(f"[\udc80-\udcff{_chars_using(self.escaped)}]+")
        self.byte_ids = np.array(
            [vocab[b2u[b]] if b not in self.escaped else -1 for b in range(256)],
            dtype=np.int64)
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False)
        tok = Tokenizer(bpe)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre == "smollm":     # llama.cpp's smollm: every digit alone, then the GPT-2 regex
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        self._tok = tok
        u2b = {ch: b for b, ch in b2u.items()}
        self._id_bytes = []
        for t in tokens:
            try:
                self._id_bytes.append(bytes(u2b[c] for c in t))
            except KeyError:        # control tokens with characters outside the byte map
                self._id_bytes.append(t.encode("utf-8"))

    def _encode_raw_bytes(self, raw: bytes) -> np.ndarray:
        ids = []
        for b in raw:
            if b in self.escaped:
                ids += [self.esc_id, int(self.byte_ids[b ^ 0x40])]
            else:
                ids.append(int(self.byte_ids[b]))
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids) -> bytes:
        """Bytes for a sequence of ids; raises FormatError on ids no encoding produces."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._id_bytes)):
            raise FormatError("token id outside the vocabulary")
        table = self._id_bytes
        if self.esc_id < 0 or not (ids == self.esc_id).any():
            return b"".join([table[i] for i in ids.tolist()])
        out, it = [], iter(ids.tolist())
        for i in it:
            if i != self.esc_id:
                out.append(table[i])
                continue
            nxt = next(it, None)
            piece = table[nxt] if nxt is not None else b""
            if len(piece) != 1 or piece[0] ^ 0x40 not in self.escaped:
                raise FormatError("escape token not followed by an escapable byte token")
            out.append(bytes([piece[0] ^ 0x40]))
        return b"".join(out)


class SpmTokenizer(_ExactTokenizer):
    """SentencePiece-style BPE with byte fallback, as GGUF files with tokenizer.ggml.model
    "llama" describe it (Gemma): exact bytes <-> ids for any byte string.

    Encoding, as SentencePiece and llama.cpp do it:
    1. user-defined tokens (type 4: newline and tab runs, space runs, a few HTML tags) are
       cut out of the text first, longest match first, and become their own ids;
    2. the rest has its spaces replaced by "▁" (no dummy prefix is ever added) and is
       merged BPE-style, starting from characters, always merging the adjacent pair whose
       merged piece has the best score (merges are derived from the vocabulary: every split
       of a normal token into two normal tokens, ranked by the merged token's score);
    3. characters with no token become their UTF-8 bytes' byte-fallback tokens <0xXX>.
    Bytes that are not valid UTF-8, and the character "▁" itself (which step 2 would turn
    back into a space), go to byte-fallback tokens directly. Control and unused tokens
    (<bos>, <unusedN>, ...) are never produced. Decoding maps every id to fixed bytes
    ("▁" -> space; <0xXX> -> that byte), so ``decode(encode(x)) == x`` for every x.
    """

    NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

    def __init__(self, tokens: list[str], scores: list[float], token_types: list[int]):
        from tokenizers import AddedToken, Tokenizer, models, normalizers

        if len(scores) != len(tokens) or len(token_types) != len(tokens):
            raise UnsupportedModelError("SentencePiece vocabulary without scores or types")
        self.tokens = tokens
        types = np.asarray(token_types, dtype=np.int64)
        self.byte_ids = np.full(256, -1, dtype=np.int64)
        for i in np.nonzero(types == self.BYTE)[0].tolist():
            m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", tokens[i])
            if m:
                self.byte_ids[int(m.group(1), 16)] = i
        if (self.byte_ids < 0).any():
            raise UnsupportedModelError(
                f"vocabulary lacks byte-fallback tokens for {int((self.byte_ids < 0).sum())} "
                f"byte values; llmzip needs all 256 to code any byte string")
        # the BPE vocabulary: normal, user-defined and byte tokens (first id wins)
        vocab: dict[str, int] = {}
        for i in np.nonzero(np.isin(types, (self.NORMAL, self.USER_DEFINED, self.BYTE)))[0]:
            vocab.setdefault(tokens[i], int(i))
        normal = [i for i in np.nonzero(types == self.NORMAL)[0].tolist()
                  if vocab[tokens[i]] == i]
        # merges: (left, right) for every way to cut a normal token into two normal tokens,
        # best merged-token score first (ties: lower id first)
        pieces = {tokens[i] for i in normal}
        order = sorted(normal, key=lambda i: (-scores[i], i))
        merges = []
        for i in order:
            t = tokens[i]
            for k in range(1, len(t)):
                if t[:k] in pieces and t[k:] in pieces:
                    merges.append((t[:k], t[k:]))
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                                   byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        user = [tokens[i] for i in np.nonzero(types == self.USER_DEFINED)[0].tolist()
                if vocab.get(tokens[i]) == i]
        tok.add_tokens([AddedToken(t, normalized=False, special=False, single_word=False,
                                   lstrip=False, rstrip=False) for t in user])
        self._tok = tok
        # runs routed around the BPE: bytes that are not valid UTF-8, and "▁"
        self._raw_run = re.compile("[\udc80-\udcff\u2581]+")
        self._id_bytes = []
        for i, t in enumerate(tokens):
            if types[i] == self.BYTE and self.byte_ids[int(t[3:5], 16)] == i:
                self._id_bytes.append(bytes([int(t[3:5], 16)]))
            elif types[i] == self.NORMAL:
                self._id_bytes.append(t.replace("\u2581", " ").encode("utf-8"))
            else:                # user-defined as written; control/unused never produced
                self._id_bytes.append(t.encode("utf-8"))

    def _encode_raw_bytes(self, raw: bytes) -> np.ndarray:
        return self.byte_ids[np.frombuffer(raw, dtype=np.uint8)]    # byte-fallback tokens

    def decode(self, ids) -> bytes:
        """Bytes for a sequence of ids; raises FormatError on ids outside the vocabulary."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._id_bytes)):
            raise FormatError("token id outside the vocabulary")
        table = self._id_bytes
        return b"".join([table[i] for i in ids.tolist()])
