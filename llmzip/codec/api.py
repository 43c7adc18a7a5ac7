"""Compressor: bytes (or a folder) in, an archive out, in model chunks and classical ones;
and the one-shot compress. Decoding is decompressor.py's."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..engine.exact import KERNELS, ExactEngine, ExactProfile
from ..engine.float_engine import (ATTENTIONS, Engine, EngineProfile, resolve_attention,
                                   resolve_dtype)
from ..engine.models.registry import LoadedModel, load_model
from ..errors import FormatError, ModelError, UsageError
from . import container as ct
from .classical import best_classical
from .adapt import AdaptConfig
from .levels import DEFAULT_LEVEL, level_settings
from .lockstep import encode_segments
from .segment import plan_segments, split_text_binary
from .tokenizer import tokenizer_for

FORMAT_NAME = "llmzip"
BINARY_CHUNK = 1 << 22                 # binary spans: classical chunks of 4 MiB
PLAN_PIECE = 1 << 26                   # text spans are tokenised 64 MiB at a time
DEFAULT_SEG_LEN = 2048                 # tokens per segment (BOS not counted)
MAX_SEGMENTS = 4096                    # per model chunk (decoder limit)
MAX_SLIDING_SEG = 1 << 20              # tokens per segment with a sliding window
SLIDES = {"shift": "shift", "rebuild": ""}   # user's name -> ExactProfile.slide
DEFAULT_MEMORY_LIMIT = 8 << 30         # bytes the decoder may allocate for the KV cache
MAX_DEFAULT_THREADS = 2                # see default_threads()
_CHECKED_ENGINE_FIELDS = ("torch", "constriction", "cpu")
ENGINES = ("exact", "float")           # exact: integer arithmetic, archives open anywhere
DEVICES = ("cpu", "cuda")


def check_device(device: str) -> None:
    """Only the CPU is tested; CUDA is refused with the reason (docs/engine.md, GPU)."""
    if device == "cpu":
        return
    if device == "cuda":
        raise UsageError("--device cuda: the exact engine's arithmetic is written to give the "
                         "same integers on a GPU (docs/engine.md, 'GPU'), but it has not been "
                         "tested on one yet, so llmzip refuses it; use --device cpu")
    raise UsageError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")


def default_threads() -> int:
    """$LLMZIP_THREADS, else the CPUs this process may use, at most 2.

    The count is recorded in the archive and decoding uses it again, so the default stays
    small: an archive made on a big machine must not make a small one oversubscribe (on a
    busy 2-core machine, torch threads competing with another process ran 10-20x slower).
    On the quiet 2-core machine 2 threads stepped the default model 1.3-1.5x faster than 1.
    """
    env = os.environ.get("LLMZIP_THREADS")
    if env is not None:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError("LLMZIP_THREADS must be a whole number") from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cpus))


# ----------------------------------------------------------------------------- varints

def _put_varint(out: bytearray, n: int) -> None:
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint in model chunk")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise FormatError("varint too long in model chunk")


def _rfind_newline(data, a: int, b: int) -> int:
    """The last b"\n" in data[a:b] (its index in data), or -1."""
    if hasattr(data, "rfind"):
        return data.rfind(b"\n", a, b)
    i = bytes(data[a:b]).rfind(b"\n")
    return a + i if i >= 0 else -1


@dataclass
class Stats:
    """What the last compress call did (for info, benchmarks and progress)."""
    input_bytes: int = 0
    output_bytes: int = 0
    model_bytes: int = 0                # original bytes coded with the model
    model_tokens: int = 0
    ideal_bits: float = 0.0             # sum of -log2 p over model-coded tokens
    chunks: dict = field(default_factory=dict)   # method name -> count
    whole_classical: bool = False       # zstd/xz over the whole input beat the chunks
    seconds: float = 0.0
    model_load_seconds: float = 0.0
    adapt_seconds: float = 0.0          # of `seconds`, spent in the adaptive models
    adapt_table_seconds: float = 0.0    # of those, making tables from the adapted logits
                                        # (what the engine does itself without them)
    learn_seconds: float = 0.0          # of `seconds`, spent in dynamic evaluation's steps

    @property
    def bpb(self) -> float:
        return 8 * self.output_bytes / self.input_bytes if self.input_bytes else 0.0


def choose_auto(data: bytes, sample_bytes: int = 8192) -> tuple[str, dict]:
    """`--model auto`: the installed model that codes a sample of `data` in the fewest bits.

    The sample is the first `sample_bytes` of the first text run, scored as `llmzip eval`
    scores a file (chunks of 2,048 tokens after a BOS); returns (name, {name: ideal bits
    per byte of the sample}).
    """
    from ..engine.models import catalog
    from ..engine.score import token_bits
    runs = [(s, e) for s, e, text in split_text_binary(data) if text]
    sample = data[runs[0][0]:runs[0][0] + sample_bytes] if runs else b""
    candidates = [r["name"] for r in catalog.list_models() if r.get("status") == "ok"]
    if not candidates:
        raise ModelError("--model auto: no installed model found (see `llmzip models`)")
    if not sample:
        return candidates[0], {}
    scores = {}
    for name in candidates:
        m = load_model(name)
        ids = tokenizer_for(m).encode(sample)
        bits = token_bits(m, ids, context=min(2048, m.config.context_length))
        scores[name] = float(bits.sum()) / len(sample)
    return min(scores, key=scores.get), scores


PROBE_BYTES = 2048          # the default level's model check: a sample this long
PROBE_BPB = 2.0             # above this on the sample, the other installed models are tried


def exact_sample_bpb(model: LoadedModel, sample: bytes) -> float:
    """Ideal bits/byte of `sample` under the exact engine (one segment, a prefill)."""
    tok = tokenizer_for(model)
    ids = np.asarray(tok.encode(sample)[:model.config.context_length - 1], dtype=np.int64)
    if not len(ids):
        return 0.0
    eng = ExactEngine(model)
    bits = 0.0
    for t, _, f in eng.encode_steps([ids]):
        bits -= float(np.log2(f[0, ids[t]] / float(1 << eng.profile.precision)))
    return bits / len(tok.decode(ids))


def probe_default_model(data: bytes, model: LoadedModel) -> tuple[str, dict]:
    """The default level's model: `model` unless it codes a sample of the input's first
    text run worse than PROBE_BPB bits/byte (text it was not trained on: another
    language, code); then every installed model is scored on the sample and the best is
    returned, with the scores. The sample costs a fraction of a second with the default
    model; the others load only where it is bad."""
    runs = [(a, b) for a, b, text in split_text_binary(data) if text]
    sample = bytes(data[runs[0][0]:min(runs[0][1], runs[0][0] + PROBE_BYTES)]) if runs else b""
    if len(sample) < 256:
        return model.name, {}
    scores = {model.name: exact_sample_bpb(model, sample)}
    if scores[model.name] <= PROBE_BPB:
        return model.name, {}
    from ..engine.models import catalog
    for r in catalog.list_models():
        if r.get("status") == "ok" and r["name"] not in scores:
            scores[r["name"]] = exact_sample_bpb(load_model(r["name"]), sample)
    return min(scores, key=scores.get), scores


class Compressor:
    """Loads the model once; compresses any number of inputs with the same settings."""

    def __init__(self, model: str | LoadedModel | None = None, *, dtype: str = "auto",
                 threads: int | None = None, seg_len: int | None = None, batch: int = 64,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT, fallback: bool = True,
                 attention: str = "auto", engine: str = "exact", kernel: str = "auto",
                 device: str = "cpu", level: int | None = None, window: int | None = None,
                 stride: int | None = None, adapt: dict | None = None,
                 slide: str | None = None):
        """engine="exact" (the default) computes in integers, so its archives decode on any
        machine, with any thread count; "float" is the float engine of llmzip 0.1, whose
        archives decode only where the CPU, threads and torch match (dtype and attention
        apply to it only). kernel forces one of the exact engine's kernel paths (KERNELS).
        threads: None follows the machine's load (exact) or default_threads() (float).
        fallback=False keeps model-coded chunks even where zstd, xz or storing would be
        smaller (for tests and measurements; archives stay valid either way).
        window, stride: the exact engine's sliding window (positions, BOS included, and
        the tokens it moves by); segments may then be longer than the model's context.
        slide: how the window moves: "shift" (its kept keys and values move with it) or
        "rebuild" (the kept context is computed again from BOS, as llmzip 0.3.0 did).
        adapt: learning rates of the adaptive models (codec/adapt.py AdaptConfig fields).
        level (1..9, default levels.DEFAULT_LEVEL) chooses the model, seg_len, window,
        stride and adapt (codec/levels.py); those given explicitly override it, and a
        level's window larger than the model's context is fitted to it. The float
        engine takes only the level's model."""
        check_device(device)
        if engine not in ENGINES:
            raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if engine == "exact" and (dtype != "auto" or attention != "auto"):
            raise UsageError("dtype and attention choose the float engine's arithmetic; "
                             "add --engine float, or drop them (the exact engine has one)")
        if kernel not in KERNELS:
            raise UsageError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        self.fallback = fallback
        self.auto = model == "auto"         # chosen per input, see compress()
        self.auto_scores: dict = {}
        self._settings = dict(dtype=dtype, threads=threads, seg_len=seg_len, batch=batch,
                              memory_limit=memory_limit, attention=attention, engine=engine,
                              kernel=kernel, device=device, level=level, window=window,
                              stride=stride, adapt=adapt, slide=slide)
        self.level = DEFAULT_LEVEL if level is None else level
        lv = level_settings(self.level)
        # no model named (here or by the level) and the exact engine: prepare() may move
        # to a better installed model where the default one is bad on a sample
        self.probe = model is None and lv["model"] is None and engine == "exact"
        if self.auto:
            model = None                    # placeholder until an input is seen
        elif model is None:
            model = lv["model"]
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        self.tokenizer = tokenizer_for(self.model)
        ctx = self.model.config.context_length
        if engine != "exact":
            if window or stride or adapt:
                raise UsageError("a sliding window and adaptive models need the exact engine")
            window, stride, adapt = 0, 0, {}
        if window is None and lv["window"] > ctx:        # fit the level to a short context
            window, stride = ctx, stride or max(1, min(lv["stride"], ctx // 4))
        window = lv["window"] if window is None else window
        stride = (lv["stride"] if window == lv["window"] else 0) if stride is None else stride
        if engine == "exact" and (window or lv["seg_len"] < ctx):
            seg_len = seg_len or lv["seg_len"]
        adapt = AdaptConfig.from_dict(dict(lv["adapt"] if adapt is None else adapt),
                                      UsageError).to_dict()
        if not _window_ok(window, stride, ctx):
            raise UsageError(f"a sliding window has 2..{ctx} positions (this model's "
                             f"context) and a stride of 1..window-1, not {window}/{stride}")
        slide = lv["slide"] if slide is None else slide
        if slide not in SLIDES:
            raise UsageError(f"slide must be one of {', '.join(SLIDES)}, not {slide!r}")
        seg_len = seg_len or min(DEFAULT_SEG_LEN, ctx - 1)
        if not 1 <= seg_len <= (MAX_SLIDING_SEG if window else ctx - 1):
            raise UsageError(f"segment length must be 1..{ctx - 1} for this model "
                             f"(its context window, BOS included), or up to "
                             f"{MAX_SLIDING_SEG} with a sliding window, not {seg_len}")
        if not 1 <= batch <= MAX_SEGMENTS:
            raise UsageError(f"batch must be 1..{MAX_SEGMENTS}, not {batch}")
        if threads is not None and threads < 1:
            raise UsageError("threads must be at least 1")
        # recorded only where a window can slide, so archives that need nothing new keep
        # their older format version
        slide = SLIDES[slide] if window and seg_len > window else ""
        if engine == "exact":
            self.profile = ExactProfile(seg_len=seg_len, batch=batch, window=window,
                                        stride=stride, adapt=adapt, slide=slide)
            self.engine = ExactEngine(self.model, self.profile, kernel=kernel, threads=threads,
                                      memory_limit=memory_limit)
            self.stats = Stats()
            return
        dtype = resolve_dtype(dtype)
        if dtype not in ("float32", "bfloat16"):
            raise UsageError(f"dtype must be auto, float32 or bfloat16, not {dtype!r}")
        if threads is not None and threads < 1:
            raise UsageError("threads must be at least 1")
        attention = resolve_attention(attention)
        if attention not in ATTENTIONS:
            raise UsageError(f"attention must be auto or one of {', '.join(ATTENTIONS)}, "
                             f"not {attention!r}")
        self.profile = EngineProfile.make(dtype=dtype, threads=threads or default_threads(),
                                          seg_len=seg_len, batch=batch, attention=attention)
        self.engine = Engine(self.model, self.profile, memory_limit)
        self.stats = Stats()

    def header(self, uses_model: bool) -> dict:
        """Header JSON; model and engine are recorded only when a chunk depends on them,
        so an archive of binary data stays small and decodes without any model."""
        from .. import __version__
        h = {"format": FORMAT_NAME, "llmzip": __version__, "mode": "prior"}
        if uses_model:
            h.update(model=self.model.describe(), engine=self.engine_profile())
            if self.auto_scores:
                h["model"]["chosen_by"] = {"auto" if self.auto else "probe": {
                    k: round(v, 4) for k, v in self.auto_scores.items()}}
        return h

    def engine_profile(self) -> dict:
        """The engine profile an archive records: for the exact engine with the integer
        weights' hash (known here even when other processes did the coding)."""
        prof = self.engine.profile.to_dict()
        if self.engine.kind == "exact" and not prof.get("weights"):
            prof["weights"] = self.engine.weights_id
        return prof

    def compress(self, data: bytes, progress=None) -> bytes:
        """Whole archive for `data`. progress(n_bytes) is called as input is consumed."""
        t0 = time.perf_counter()
        self.prepare(data)
        load0 = self.model.load_seconds
        self.stats = st = Stats(input_bytes=len(data))
        chunks = []                         # (method, chunk bytes); raw bytes not kept
        for task in self.plan(data):
            method, chunk, delta = self.code_task(task, progress)
            self.add_stats(delta)
            chunks.append((method, chunk))
        blob = self._archive(data, chunks)
        if self.whole_fallback(data):
            # Text was cut into model-sized chunks, each coded with the model or (where it
            # lost) on its own: zstd and xz over the whole input see repeats further apart
            # than one chunk. A list of 10,000 URLs: 2.02 bits/byte with the model, 1.98
            # with xz chunk by chunk, 1.71 with xz over the file. (An input that is one
            # binary span already got exactly this.)
            whole = [self.code_task(t)[:2] for t in self.plan_whole(data)]
            alt = self._archive(data, whole)
            if len(alt) < len(blob):
                blob, chunks = alt, whole
                self.use_whole_stats()
        for method, _ in chunks:
            name = ct.METHOD_NAMES[method]
            st.chunks[name] = st.chunks.get(name, 0) + 1
        st.output_bytes = len(blob)
        st.seconds = time.perf_counter() - t0
        st.model_load_seconds = self.model.load_seconds - load0
        return blob

    # The steps of compress(), public so that a work layer (tools/cluster.py) can hand the
    # chunks to other processes: plan() cuts the input into tasks in archive order (cheap:
    # text/binary routing and tokenising), code_task() codes one of them (the slow part,
    # independent of every other task), archive_head()/footer bytes frame the chunks.
    # compress() is these steps run in one process, so both give the same bytes.

    def prepare(self, data: bytes) -> None:
        """`--model auto`: choose the model for this input (before plan())."""
        if self.auto:                       # --model auto: the best model on a sample
            name, scores = choose_auto(data)
            if name != self.model.name:
                self.__init__(name, fallback=self.fallback, **self._settings)
            self.auto, self.auto_scores = True, scores
        elif self.probe:                    # the default model, unless it is bad here
            name, scores = probe_default_model(data, self.model)
            if name != self.model.name:
                self.__init__(name, fallback=self.fallback, **self._settings)
            self.probe, self.auto_scores = False, scores

    def plan(self, data):
        """The chunk tasks of `data` in archive order: ("binary", raw bytes) or ("model",
        token ids, segment lengths, segment table). Every task is coded on its own.

        `data` may be an mmap: a text span is tokenised in pieces of at most PLAN_PIECE
        bytes (cut after a newline where there is one), so planning holds one piece and
        its token ids, never the whole input."""
        for start, end, is_text in split_text_binary(data):
            if not is_text:
                for i in range(start, end, BINARY_CHUNK):
                    yield ("binary", bytes(data[i:min(i + BINARY_CHUNK, end)]))
                continue
            a = start
            while a < end:
                b = min(end, a + PLAN_PIECE)
                if b < end:
                    nl = _rfind_newline(data, a, b)
                    if nl > a:
                        b = nl + 1
                yield from self._plan_model(bytes(data[a:b]))
                a = b

    def whole_fallback(self, data) -> bool:
        """Whether compress() also tries classical chunks over the whole input."""
        if not self.fallback:
            return False
        spans = split_text_binary(data)
        return len(spans) > 1 or any(t for _, _, t in spans)

    def plan_whole(self, data):
        """The tasks of the whole-input classical alternative (see compress())."""
        yield from self._plan_binary(data)

    def use_whole_stats(self) -> None:
        st = self.stats
        st.model_bytes = st.model_tokens = 0
        st.ideal_bits = 0.0
        st.whole_classical = True

    def add_stats(self, delta: dict) -> None:
        st = self.stats
        st.model_bytes += delta.get("model_bytes", 0)
        st.model_tokens += delta.get("model_tokens", 0)
        st.ideal_bits += delta.get("ideal_bits", 0.0)
        st.adapt_seconds += delta.get("adapt_seconds", 0.0)
        st.adapt_table_seconds += delta.get("adapt_table_seconds", 0.0)
        st.learn_seconds += delta.get("learn_seconds", 0.0)

    def archive_head(self, methods, tree: dict | None = None) -> bytes:
        """The header of an archive with chunks of these methods (of a directory archive:
        with its `tree` description)."""
        methods = set(methods)
        header = self.header(ct.METHOD_MODEL in methods)
        if tree is not None:
            header["tree"] = tree
        return ct.header_bytes(header, ct.version_for(methods, tree is not None))

    def compress_tree(self, root: str, progress=None, job=None) -> bytes:
        """Archive of the directory tree at `root` (format version 6, codec/tree.py): a
        file index, then each file's chunks; every file decodes on its own."""
        from .tree import TreeJob
        t0 = time.perf_counter()
        job = job or TreeJob(root)
        self.stats = st = Stats(input_bytes=job.original_len)
        chunks = []
        for task in job.plan(self):
            method, chunk, delta = self.code_task(task, progress)
            self.add_stats(delta)
            chunks.append((method, chunk))
        blob = b"".join([self.archive_head((m for m, _ in chunks), job.header()),
                         *(c for _, c in chunks),
                         ct.footer_bytes(len(chunks), job.original_len, job.sha256())])
        for method, _ in chunks:
            name = ct.METHOD_NAMES[method]
            st.chunks[name] = st.chunks.get(name, 0) + 1
        st.output_bytes = len(blob)
        st.seconds = time.perf_counter() - t0
        return blob

    def _archive(self, data: bytes, chunks: list) -> bytes:
        """Header, the (method, chunk bytes) chunks, footer."""
        return b"".join([self.archive_head(m for m, _ in chunks), *(c for _, c in chunks),
                         ct.footer_bytes(len(chunks), len(data), ct.sha256(data))])

    def plan_classical(self, data):
        """Tasks that code `data` with classical methods only (no model)."""
        yield from self._plan_binary(data)

    @staticmethod
    def _plan_binary(span):
        for i in range(0, len(span), BINARY_CHUNK):
            yield ("binary", bytes(span[i:i + BINARY_CHUNK]))

    def code_task(self, task, progress=None) -> tuple[int, bytes, dict]:
        """(method, chunk record + coded bytes, stats delta) of one task of plan()."""
        if task[0] == "binary":
            raw = task[1]
            method, coded = best_classical(raw)
            if progress:
                progress(len(raw))
            return method, ct.chunk_bytes(method, raw, coded), {}
        _, chunk_ids, seg_lens, table = task
        tok = self.tokenizer
        raw = tok.decode(chunk_ids)
        segments, p = [], 0
        for L in seg_lens:
            segments.append(chunk_ids[p:p + L])
            p += L
        step_progress = (lambda tokens: progress(len(tok.decode(tokens)))) if progress \
            else None
        timing: dict = {}
        words, bits = encode_segments(self.engine, segments, step_progress, timing)
        coded = bytes(table) + words
        best = best_classical(raw) if self.fallback else None
        if best is None or len(coded) < len(best[1]):
            return ct.METHOD_MODEL, ct.chunk_bytes(ct.METHOD_MODEL, raw, coded), dict(
                model_bytes=len(raw), model_tokens=len(chunk_ids), ideal_bits=bits,
                **timing)
        return best[0], ct.chunk_bytes(best[0], raw, best[1]), timing

    def _plan_model(self, span):
        tok = self.tokenizer
        ids = tok.encode(span)
        if tok.decode(ids) != span:          # never trust a tokenizer blindly
            yield from self._plan_binary(span)
            return
        pos = 0
        while pos < len(ids):
            seg_lens = plan_segments(len(ids) - pos, self.profile.seg_len,
                                     self.profile.batch)[0]
            n, adjust = sum(seg_lens), 0
            if pos + n < len(ids) and ids[pos + n - 1] == getattr(tok, "esc_id", -1):
                # an escape token and the byte token after it stay in one chunk
                adjust = -1 if seg_lens[-1] > 1 else 1
            table = bytearray()               # segment table: n_seg, total, adjust
            for v in (len(seg_lens), n, adjust + 1):
                _put_varint(table, v)
            seg_lens[-1] += adjust
            n += adjust
            yield ("model", ids[pos:pos + n], seg_lens, bytes(table))
            pos += n


def _window_ok(window, stride, ctx: int) -> bool:
    """A sliding window the engine can run: none (0, 0), or 2..ctx positions with a stride
    of 1..window-1 tokens."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (window, stride)):
        return False
    return (window, stride) == (0, 0) or (2 <= window <= ctx and 1 <= stride < window)


def compress(data: bytes, model: str | LoadedModel | None = None, **kw) -> bytes:
    """One-shot: the archive for `data` (see Compressor for the options)."""
    return Compressor(model, **kw).compress(bytes(data))
