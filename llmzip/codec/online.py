"""Online mode: a byte-level GPT trained on the data *while* it is coded.

A model trained on data is a lossless compressor of that data. The encoder codes a block
of bytes with the current model, then makes one training step on that block; the decoder
decodes the block with the same model, then makes the same training step. No weights
travel: the archive costs the sum of the coding losses (the area under the loss curve) plus
a small header that names the program (architecture, seed, optimizer schedule).

Why a byte-level vocabulary (V = 256):
  * every byte string is a valid token sequence: no tokenizer to ship, fit or trust, and
    invalid UTF-8 or binary data round-trips for free;
  * a model trained from scratch on at most a few MB learns 256 embeddings quickly; a BPE
    vocabulary of 32k+ rows would mostly hold untrained rows, and its output layer
    (C x V) would dominate the parameters and the FLOPs of a small model;
  * the integer tables (256 entries at 24 bits) are cheap to build per coded symbol.

Schedule of one step (S streams = S contiguous slices of the input, coded in lockstep;
W = ctx + new positions; every shape is fixed, so encoder and decoder run the same kernels):

    coding pass  (inference, KV cache):  prefill the ctx bytes before the block -> logits
                 for byte 0; then `new` single-token steps, each turning logits (S, 256)
                 into integer tables that code/decode one byte per stream: mixed with
                 context models when `mix` > 0 (every preset; codec/bytecm.py, bitwise,
                 since 0.9; codec/bytemix.py with `mixer` 0), else directly
                 (probs.logits_to_freqs).
    training     full causal forward on (S * (1 + replay), W - 1) inputs, cross-entropy,
                 backward, gradient clip, Adam step with the scheduled learning rate.

Both sides run exactly this code (the encoder never takes a faster path), on the same
number of threads, with torch.use_deterministic_algorithms(True). The archive records
torch version, thread count and CPU features; decoding elsewhere is refused unless the
caller overrides it (the whole-content SHA-256 still guards the output).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.float_engine import EngineProfile, torch_threads
from ..engine.models.gpt import GPT, GPTConfig, KVCache
from ..engine.probs import PRECISION, bits_of, logits_to_freqs
from ..errors import (ChecksumError, EngineMismatchError, FormatError,
                      UsageError)
from . import container as ct
from .bytecm import VERSION as BITMIX_VERSION, VERSIONS as BITMIX_VERSIONS, BitMixer
from .bytemix import ByteMixer
from .classical import CLASSICAL_METHODS, best_classical, decode_classical
from .coder import RangeDecoder, RangeEncoder

METHOD_ONLINE = getattr(ct, "METHOD_ONLINE", 3)     # chunk method: range-coded online piece
ct.METHOD_NAMES.setdefault(METHOD_ONLINE, "online")

MODE = "online"
PIECE = ct.MAX_CHUNK_RAW            # bytes per online chunk; each piece has a fresh model
CURVE_BINS = 64                     # most points of each stored loss curve (200 before
                                    # 0.10: 270 more header bytes on a 1 MB file)
CURVE_SCALE = 30                    # curves store round(bpb * 30) as uint8
_CHECKED_ENGINE_FIELDS = ("torch", "cpu", "threads", "dtype")
# limits on what an archive header may ask a decoder to allocate or run
_MAX = {"n_layer": 64, "n_embd": 4096, "n_head": 64, "ffn_hidden": 16384, "ctx": 8192,
        "new": 4096, "streams": 4096, "replay": 16, "mix": 1 << 24, "mix_order": 16,
        "mix_match": 1 << 24, "mixer": max(BITMIX_VERSIONS)}
_MIN0 = ("replay", "mix", "mix_match", "mixer")    # may be 0


@dataclass(frozen=True)
class OnlineConfig:
    """Architecture and training schedule. Everything the decoder must repeat."""
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    ffn_hidden: int = 344          # SwiGLU hidden width (~ 8/3 C)
    ctx: int = 64                  # bytes of history before each block
    new: int = 32                  # bytes coded per stream per step
    streams: int = 4               # parallel slices of the input (the batch)
    lr: float = 5e-3               # Adam peak learning rate
    lr_min: float = 0.1            # final learning rate, as a fraction of lr (cosine decay)
    warmup: int = 20               # linear warm-up steps
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    grad_clip: float = 1.0         # max global gradient norm (0: off)
    train_on: str = "all"          # "all": every target in the window; "new": the block only
    replay: int = 0                # extra windows of already-coded history per stream/step
    replay_steps: bool = False     # True: each replay set gets its own optimizer step
    init_std: float = 0.02
    mix: int = 0                   # byte context models mixed with the GPT (codec/bytemix.py):
                                   # the mixer's learning rate in 2^-24 per bit; 0: GPT alone
    mix_order: int = 6             # highest byte context order of the mixed context models
    mix_match: int = 0             # match model's learning rate in 2^-16 bits (0: none)
    mixer: int = 0                 # with mix > 0: 0 the log-domain mixer of byte counts
                                   # (bytemix.py, llmzip 0.5; uses mix, mix_order, mix_match),
                                   # 1 the bitwise context mixer (bytecm.py, llmzip 0.9),
                                   # 2 its version 2 (more contexts, a 4th mixer; 0.11),
                                   # 3 its version 3 (the text's layout; 0.12)

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=256, n_layer=self.n_layer, n_embd=self.n_embd,
                         n_head=self.n_head, n_kv_head=self.n_head,
                         head_dim=self.n_embd // self.n_head, ffn_hidden=self.ffn_hidden,
                         rope_base=10000.0, context_length=self.ctx + self.new,
                         tie_embeddings=True)

    def n_params(self) -> int:
        return self.gpt_config().n_params()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, error=UsageError) -> "OnlineConfig":
        """Validate a config from a user file (UsageError) or an archive (FormatError)."""
        if not isinstance(d, dict):
            raise error("online config must be a JSON object")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise error(f"unknown online config keys: {', '.join(unknown)}")
        base = cls()
        vals = {}
        for k, v in d.items():
            want = type(getattr(base, k))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if type(v) is not want:
                raise error(f"online config {k!r} must be {want.__name__}, not {v!r}")
            vals[k] = v
        cfg = replace(base, **vals)
        for k, hi in _MAX.items():
            lo = 0 if k in _MIN0 else 1
            if not lo <= getattr(cfg, k) <= hi:
                raise error(f"online config {k} = {getattr(cfg, k)} outside {lo}..{hi}")
        if cfg.n_embd % cfg.n_head or (cfg.n_embd // cfg.n_head) % 2:
            raise error("n_embd must be n_head times an even head size")
        if cfg.train_on not in ("all", "new"):
            raise error("train_on must be 'all' or 'new'")
        if not (0 < cfg.lr < 1 and 0 <= cfg.lr_min <= 1 and 0 <= cfg.warmup < 10**9
                and 0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1 and 0 < cfg.eps < 1
                and 0 <= cfg.grad_clip < 1e6 and 0 < cfg.init_std < 1):
            raise error("online config: optimizer values out of range")
        if cfg.n_params() > 200_000_000:
            raise error(f"online model of {cfg.n_params()} parameters is too large")
        return cfg


# the mix: the bitwise context mixer, version 4 (llmzip 0.13; mix_order and mix_match then
# unused: they are 0.5's mixer's orders and match rate, its rate 0.002 per bit, match 0.1)
MIX = dict(mix=33554, mix_order=6, mix_match=6554, mixer=BITMIX_VERSION)


def _preset(n_layer, n_embd, n_head, ctx, lr, replay=2) -> OnlineConfig:
    """The measured recipe (docs/online.md): 8 streams of 32 new bytes, 2 replay windows
    (3 in preset s since llmzip 0.13) each with its own optimizer step, SwiGLU width ~8/3
    C; lr shrinks as the model grows; byte context models mixed in (llmzip 0.5; bitwise
    context mixing since 0.9)."""
    return OnlineConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                        ffn_hidden=int(round(8 * n_embd / 3 / 8)) * 8, ctx=ctx, new=32,
                        streams=8, lr=lr, replay=replay, replay_steps=True, **MIX)


# Named by size. Speeds and bits per byte measured on this project's 2-core machine are in
# docs/online.md; parameter counts: PRESET_PARAMS (embedding included, output tied).
PRESETS: dict[str, OnlineConfig] = {
    "xs": _preset(1, 48, 4, 32, 1e-2),       #    40,080 parameters
    "s": _preset(2, 96, 4, 64, 6e-3, 3),     #   246,240
    "m": _preset(2, 128, 4, 64, 5e-3),       #   428,672
    "l": _preset(3, 192, 6, 96, 3e-3),       # 1,377,600
    "xl": _preset(4, 256, 8, 128, 2e-3),     # 3,205,376
}
PRESET_PARAMS = {k: v.n_params() for k, v in PRESETS.items()}


def resolve_config(preset: str | None = "s", config=None) -> tuple[str, OnlineConfig]:
    """(name, config) from a preset name, a config dict / OnlineConfig, or a JSON file path.

    A JSON file may hold {"preset": "m", "lr": 0.004, ...}: the named preset with overrides.
    """
    if isinstance(config, OnlineConfig):
        return "custom", OnlineConfig.from_dict(config.to_dict())
    if isinstance(config, str):
        try:
            with open(config, "rb") as f:
                config = json.loads(f.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read online config {config!r}: {e}") from None
    if isinstance(config, dict):
        config = dict(config)
        base = config.pop("preset", None)
        if base is not None and base not in PRESETS:
            raise UsageError(f"unknown preset {base!r} (choose from {', '.join(PRESETS)})")
        d = PRESETS[base].to_dict() if base else OnlineConfig().to_dict()
        d.update(config)
        return "custom" if config else base, OnlineConfig.from_dict(d)
    if config is not None:
        raise UsageError("config must be an OnlineConfig, a dict or a JSON file path")
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    return preset, PRESETS[preset]


def lr_at(cfg: OnlineConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay from lr to lr * lr_min over the whole input."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    frac = step / max(1, total - 1)
    return cfg.lr * warm * (cfg.lr_min + (1 - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * frac)))


@contextlib.contextmanager
def _deterministic(threads: int):
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch_threads(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(old)


class _Abort(Exception):
    """Online coding is clearly losing to storing the bytes: stop early (encoder only)."""


class OnlineCoder:
    """One piece of input, S streams, one model trained as it codes. Shared by both sides.

    Buffer layout: buf (S, ctx + steps * new) uint8; columns [0, ctx) are zero padding
    (the history before each stream starts), stream s's bytes start at column ctx.
    """

    def __init__(self, cfg: OnlineConfig, seed: int, n: int, threads: int):
        self.cfg, self.n, self.threads = cfg, n, threads
        S, new, ctx = cfg.streams, cfg.new, cfg.ctx
        self.L = -(-n // S)                                   # bytes per stream (last shorter)
        self.steps = -(-self.L // new)
        self.buf = np.zeros((S, ctx + self.steps * new), dtype=np.uint8)
        pos = np.arange(self.steps * new)                     # position inside a stream
        starts = np.arange(S)[:, None] * self.L
        self.file_pos = starts + pos[None, :]                 # (S, steps*new) file offsets
        self.live = (pos[None, :] < self.L) & (self.file_pos < n)   # (S, steps*new)
        self.bits = np.zeros(self.live.shape, dtype=np.float32)     # ideal bits per byte
        self.loss_bits = 0.0                                  # float model's -log2 p, summed
        self.gcfg = cfg.gpt_config()
        self.model = GPT(self.gcfg).init_random(seed, cfg.init_std)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr,
                                    betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, foreach=False)
        self.cache = KVCache(self.gcfg, S, ctx + new)
        self.rng = np.random.default_rng(seed)                # replay positions
        self.mixer = None                                     # byte context models
        if cfg.mix and cfg.mixer >= 1:
            self.mixer = BitMixer(S, self.L, n, PRECISION, version=cfg.mixer)
        elif cfg.mix:
            self.mixer = ByteMixer(S, cfg.mix, cfg.mix_order, cfg.mix_match, PRECISION)

    def load(self, data: bytes) -> None:
        """Encoder: place the known bytes into the buffer."""
        flat = np.frombuffer(data, dtype=np.uint8)
        cols = self.cfg.ctx + np.nonzero(self.live)[1]
        rows = np.nonzero(self.live)[0]
        self.buf[rows, cols] = flat[self.file_pos[self.live]]

    def result(self) -> bytes:
        out = np.zeros(self.n, dtype=np.uint8)
        cols = self.cfg.ctx + np.nonzero(self.live)[1]
        out[self.file_pos[self.live]] = self.buf[np.nonzero(self.live)[0], cols]
        return out.tobytes()

    @torch.inference_mode()
    def _code_block(self, k: int, step_fn) -> None:
        """Coding pass of step k: prefill ctx bytes, then `new` one-byte KV steps."""
        cfg, model = self.cfg, self.model
        p = k * cfg.new                                       # first block byte, stream coords
        x = torch.from_numpy(self.buf[:, p:p + cfg.ctx]).long()  # (S, ctx) history/padding
        logits = model(x, self.cache, 0)[:, -1]               # (S, 256) for block byte 0
        for j in range(cfg.new):
            col = p + j
            live = np.nonzero(self.live[:, col])[0]
            if live.size:
                if self.mixer is None:
                    freqs = logits_to_freqs(logits)[live]     # (n, 256) int64, rows sum 2**24
                else:                                         # mixed with the context models
                    freqs = self.mixer.tables(live, logits[live])
                known = self.buf[live, cfg.ctx + col].astype(np.int64)   # encoder only
                sym = step_fn(live, freqs, known)
                if self.mixer is not None:
                    self.mixer.update(sym)
                self.buf[live, cfg.ctx + col] = sym
                self.bits[live, col] = bits_of(freqs, sym)
                logp = torch.log_softmax(logits[live].double(), dim=-1)
                self.loss_bits -= float(logp[torch.arange(live.size), torch.from_numpy(sym)]
                                        .sum()) / math.log(2)
            if j + 1 < cfg.new:
                x = torch.from_numpy(self.buf[:, cfg.ctx + col:cfg.ctx + col + 1]).long()
                logits = model(x, self.cache, cfg.ctx + j)[:, 0]

    def _train(self, k: int) -> None:
        """Training after block k: the window that ends with block k, plus `replay` windows
        of already-coded history per stream, either in one batch (one optimizer step) or,
        with replay_steps, one optimizer step per set of S windows."""
        cfg, S = self.cfg, self.cfg.streams
        p = k * cfg.new
        starts = [np.full(S, p)]                              # window starts (buffer cols)
        for _ in range(cfg.replay):                           # earlier, already-coded windows
            starts.append(self.rng.integers(0, p + 1, size=S) if p else np.full(S, p))
        groups = [[s] for s in starts] if cfg.replay_steps else [starts]
        for i, group in enumerate(groups):
            self._step(k, np.concatenate(group), new_rows=S if i == 0 else 0)

    def _step(self, k: int, st: np.ndarray, new_rows: int) -> None:
        """One optimizer step on windows starting at buffer columns st (B,), stream b % S."""
        cfg, S, W = self.cfg, self.cfg.streams, self.cfg.ctx + self.cfg.new
        rows = np.arange(len(st)) % S                         # (B,) stream of each window
        cols = st[:, None] + np.arange(W)[None, :]            # (B, W)
        win = torch.from_numpy(self.buf[rows[:, None], cols]).long()  # (B, W) bytes
        ok = np.zeros((len(rows), W), dtype=bool)             # target is a real, coded byte
        real = cols - cfg.ctx
        inside = real >= 0
        ok[inside] = self.live[rows[:, None].repeat(W, 1)[inside], real[inside]]
        if cfg.train_on == "new":
            ok[:new_rows, :cfg.ctx] = False
        mask = torch.from_numpy(ok[:, 1:]).float()            # (B, W-1)
        if mask.sum() == 0:
            return
        for g in self.opt.param_groups:
            g["lr"] = lr_at(cfg, k, self.steps)
        logits = self.model(win[:, :-1])                      # (B, W-1, 256)
        loss = F.cross_entropy(logits.reshape(-1, 256), win[:, 1:].reshape(-1),
                               reduction="none")
        loss = (loss * mask.reshape(-1)).sum() / mask.sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip,
                                           foreach=False)
        self.opt.step()

    def run(self, step_fn, progress=None, abort_check=None) -> None:
        with _deterministic(self.threads):
            for k in range(self.steps):
                self._code_block(k, step_fn)
                self._train(k)
                if progress is not None:
                    progress(int(self.live[:, k * self.cfg.new:(k + 1) * self.cfg.new].sum()))
                if abort_check is not None:
                    abort_check(k)

    def curves(self) -> dict:
        """Loss curves, compact: bits per byte over bytes coded so far and over position in
        the file, in bins of >= 4 KiB (at most CURVE_BINS), each a uint8 of bpb * 30."""
        live = self.live
        b = max(1, min(CURVE_BINS, self.n // 4096))
        fpos = self.file_pos[live]
        by_file = _binned(np.minimum(fpos * b // max(1, self.n), b - 1), self.bits[live], b)
        col = np.broadcast_to(np.arange(live.shape[1])[None, :], live.shape)[live]
        order = np.argsort(col, kind="stable")                # coding order: column by column
        seen = np.empty(order.size, dtype=np.int64)
        seen[order] = np.arange(order.size)
        by_seen = _binned(np.minimum(seen * b // max(1, self.n), b - 1), self.bits[live], b)
        return {"bins": b, "scale": CURVE_SCALE, "file": by_file, "seen": by_seen}


def _binned(idx: np.ndarray, vals: np.ndarray, b: int) -> str:
    s = np.bincount(idx, weights=vals.astype(np.float64), minlength=b)
    c = np.bincount(idx, minlength=b)
    q = np.clip(np.round(CURVE_SCALE * s / np.maximum(c, 1)), 0, 255).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def curve_values(curve: dict, key: str) -> np.ndarray:
    """Bits per byte per bin of a stored curve ("file" or "seen")."""
    try:
        q = np.frombuffer(base64.b64decode(curve[key], validate=True), dtype=np.uint8)
        return q.astype(np.float64) / float(curve["scale"])
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
        raise FormatError(f"bad loss curve in the archive header: {e}") from None


# ----------------------------------------------------------------------------- encoding

def _encode_piece(piece: bytes, cfg: OnlineConfig, seed: int, threads: int, progress,
                  abort: bool = True):
    """(coded payload or None when online lost early, coder) for one piece."""
    coder = OnlineCoder(cfg, seed, len(piece), threads)
    coder.load(piece)
    enc = RangeEncoder()

    def step(live, freqs, known):
        enc.encode_symbols(known, freqs)
        return known

    def abort_check(k):
        # after a quarter of the piece (and >= 64 KiB), give up if online is above 8.05 bpb
        done = (k + 1) * cfg.new * cfg.streams
        if k % 16 == 0 and done >= max(1 << 16, len(piece) // 4) and \
                coder.bits.sum() > 8.05 * coder.live[:, :(k + 1) * cfg.new].sum():
            raise _Abort

    try:
        coder.run(step, progress, abort_check if abort else None)
    except _Abort:
        return None, coder
    return enc.finish(), coder


def compress_online(data: bytes, preset: str = "s", config=None, seed: int = 0,
                    threads: int | None = None, progress=None, fallback: bool = True) -> bytes:
    """The online archive of `data`. config: OnlineConfig, dict or JSON path (overrides
    preset). progress(n_bytes) is called as bytes are coded. Pieces where online coding
    loses to zstd, xz or storing are written as such chunks (the model then starts
    afresh on the next piece, so nothing is lost in sync); fallback=False keeps online
    chunks anyway (for measurements and tests)."""
    data = bytes(data)
    name, cfg = resolve_config(preset, config)
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UsageError("seed must be an integer in 0..2**63-1")
    if threads is None:             # as prior mode: $LLMZIP_THREADS, else up to 2
        from .api import default_threads   # (preset s: 1,626 -> 2,257 B/s on 2 cores)
        threads = default_threads()
    if threads < 1:
        raise UsageError("threads must be at least 1")
    from .. import __version__
    t0 = time.perf_counter()
    chunks, pieces, methods = [], [], set()
    for i in range(0, len(data), PIECE):
        piece = data[i:i + PIECE]
        coded, coder = _encode_piece(piece, cfg, seed + i // PIECE, threads, progress,
                                     abort=fallback)
        method, body = best_classical(piece)
        if coded is not None and (len(coded) < len(body) or not fallback):
            method, body = METHOD_ONLINE, coded
        chunks.append(ct.chunk_bytes(method, piece, body))
        methods.add(method)
        rec = {"method": ct.METHOD_NAMES[method], "bytes": len(piece),
               "ideal_bits": round(float(coder.bits.sum(dtype=np.float64)), 1),
               "loss_bits": round(coder.loss_bits, 1),
               "complete": coded is not None}
        if coder.mixer is not None:                   # time in the context models and mixer
            rec["mix_seconds"] = round(coder.mixer.seconds, 3)
        if coded is not None:
            rec["curve"] = coder.curves()
        pieces.append(rec)
    header = {"format": "llmzip", "llmzip": __version__, "mode": MODE,
              "online": {"preset": name, "seed": seed, "piece": PIECE, "pieces": pieces,
                         "precision": PRECISION, "seconds": round(time.perf_counter() - t0, 3)}}
    if any(p["method"] == "online" for p in pieces):  # program + engine matter only then
        header["engine"] = {**EngineProfile.make(dtype="float32", threads=threads,
                                                 seg_len=cfg.ctx + cfg.new,
                                                 batch=cfg.streams).to_dict(),
                            "deterministic": True}
        header["online"].update(config=cfg.to_dict(), n_params=cfg.n_params())
    out = [ct.header_bytes(header, ct.version_for(methods))] + chunks
    out.append(ct.footer_bytes(len(chunks), len(data), ct.sha256(data)))
    return b"".join(out)


# ----------------------------------------------------------------------------- decoding

def _read(blob: bytes):
    """(scan info, online header part, config) of an online archive, validated."""
    info = ct.scan(bytes(blob))
    h = info.header
    if h.get("format") != "llmzip" or h.get("mode") != MODE:
        raise FormatError(f"not an online-mode archive (mode {h.get('mode')!r})")
    on = h.get("online")
    if not isinstance(on, dict):
        raise FormatError("online archive header lacks its 'online' section")
    cfg = None                                  # absent when no chunk is online-coded
    if "config" in on or any(c.method == METHOD_ONLINE for c in info.chunks):
        cfg = OnlineConfig.from_dict(on.get("config"), error=FormatError)
    seed = on.get("seed")
    if type(seed) is not int or not 0 <= seed < 2**63:
        raise FormatError("online archive has a bad seed")
    if on.get("piece") != PIECE or on.get("precision") != PRECISION:
        raise FormatError("online archive uses an unsupported piece size or precision")
    pieces = on.get("pieces")
    if not isinstance(pieces, list) or len(pieces) != len(info.chunks) or any(
            not isinstance(p, dict) for p in pieces):
        raise FormatError("online archive's piece list does not match its chunks")
    for i, c in enumerate(info.chunks):
        if c.raw_len != (PIECE if i + 1 < len(info.chunks) else c.raw_len) or c.raw_len == 0:
            raise FormatError("online archive chunk of an unexpected length")
    return info, on, cfg


def _check_engine(header: dict, threads: int | None, allow: bool) -> int:
    eng = header.get("engine")
    if not isinstance(eng, dict) or type(eng.get("threads")) is not int or eng["threads"] < 1:
        raise FormatError("online archive header lacks a valid engine profile")
    use = threads or eng["threads"]
    local = EngineProfile.make(dtype="float32", threads=use).to_dict()
    if not allow:
        for f in _CHECKED_ENGINE_FIELDS:
            if eng.get(f) != local[f]:
                raise EngineMismatchError(
                    f, eng.get(f), local[f],
                    "online decoding must repeat training bit for bit; pass "
                    "allow_engine_mismatch=True to try anyway (the SHA-256 still guards "
                    "the output)")
    return use


def decompress_online(blob: bytes, threads: int | None = None,
                      allow_engine_mismatch: bool = False, progress=None) -> bytes:
    """Original bytes of an online archive; typed llmzip errors on any problem.
    threads=None uses the thread count recorded in the archive."""
    info, on, cfg = _read(blob)
    if threads is not None and threads < 1:
        raise UsageError("threads must be at least 1")
    use = None
    if any(c.method == METHOD_ONLINE for c in info.chunks):
        use = _check_engine(info.header, threads, allow_engine_mismatch)
    out = []
    for i, c in enumerate(info.chunks):
        coded = bytes(blob[c.offset:c.offset + c.coded_len])
        if ct.crc32(coded) != c.coded_crc:
            raise ChecksumError("chunk data", f"{c.coded_crc:08x}", f"{ct.crc32(coded):08x}")
        if c.method in CLASSICAL_METHODS:
            raw = decode_classical(c.method, coded, c.raw_len)
        elif c.method == METHOD_ONLINE:
            dec = RangeDecoder(coded)
            coder = OnlineCoder(cfg, seed=on["seed"] + i, n=c.raw_len, threads=use)
            coder.run(lambda live, freqs, known: dec.decode_symbols(freqs), progress)
            raw = coder.result()
        else:
            raise FormatError(f"chunk method {c.method_name} in an online archive")
        if len(raw) != c.raw_len or ct.crc32(raw) != c.raw_crc:
            raise ChecksumError("chunk content", f"{c.raw_crc:08x}", f"{ct.crc32(raw):08x}")
        if progress is not None and c.method != METHOD_ONLINE:
            progress(len(raw))
        out.append(raw)
    data = b"".join(out)
    if ct.sha256(data) != info.footer.sha256:
        raise ChecksumError("whole content (SHA-256)", info.footer.sha256.hex(),
                            ct.sha256(data).hex())
    return data


# ----------------------------------------------------------------------------- accounting

def online_accounting(blob: bytes) -> dict:
    """Where the bytes of an online archive go.

    ideal_bits: sum of -log2 p of each online-coded byte under the integer tables (the
    training losses as coded, or the mixture's when mix > 0); loss_bits: the same under
    the float GPT alone; payload_bits: 8 x the online chunks' coded bytes;
    coding_overhead = payload / ideal - 1; mix: 0 for the GPT alone; mixer: which mixer
    (0: llmzip 0.5's log-domain mixer, 1..3: the bitwise context mixer's versions).
    """
    info, on, cfg = _read(blob)
    online = [(c, p) for c, p in zip(info.chunks, on["pieces"]) if c.method == METHOD_ONLINE]
    ideal = sum(float(p.get("ideal_bits", 0.0)) for _, p in online)
    loss = sum(float(p.get("loss_bits", 0.0)) for _, p in online)
    payload = 8 * sum(c.coded_len for c, _ in online)
    head = info.header_len
    n = info.footer.original_len
    return {
        "preset": on.get("preset"), "n_params": cfg.n_params() if cfg else 0,
        "original_bytes": n,
        "archive_bytes": info.archive_len, "header_bytes": head,
        "container_bytes": info.archive_len - head - sum(c.coded_len for c in info.chunks),
        "online_bytes": sum(c.raw_len for c, _ in online),
        "other_chunk_bytes": sum(c.coded_len for c in info.chunks if c.method != METHOD_ONLINE),
        "ideal_bits": ideal, "loss_bits": loss, "payload_bits": payload,
        "coding_overhead": (payload / ideal - 1) if ideal else 0.0,
        "bpb": 8 * info.archive_len / n if n else 0.0,
        "ideal_bpb": ideal / max(1, sum(c.raw_len for c, _ in online)),
        "chunks": [c.method_name for c in info.chunks],
        "seconds": on.get("seconds"),
        "mix": cfg.mix if cfg else 0,
        "mixer": cfg.mixer if cfg and cfg.mix else None,
    }


def plot_loss_curve(blob: bytes, path: str) -> str:
    """PNG of the stored loss curves: bits per byte over bytes trained so far and over
    position in the file (with S streams the latter shows S teeth, one per stream)."""
    info, on, cfg = _read(blob)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    start = 0
    for p in on["pieces"]:
        curve = p.get("curve")
        if isinstance(curve, dict):
            b = int(curve.get("bins", 1))
            x = start + (np.arange(b) + 0.5) * p["bytes"] / b
            for ax, key in zip(axes, ("seen", "file")):
                ax.plot(x / 1e3, curve_values(curve, key))
        start += int(p.get("bytes", 0))
    acc = online_accounting(blob)
    axes[0].set_title(f"online {on.get('preset')} ({acc['n_params'] / 1e6:.2f}M params): "
                      f"{acc['bpb']:.3f} bpb")
    axes[0].set_xlabel("bytes coded so far (KB)")
    axes[1].set_xlabel(f"position in the file (KB), {cfg.streams if cfg else 0} streams")
    axes[0].set_ylabel("bits per byte")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
