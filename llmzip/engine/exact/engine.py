"""ExactEngine: the integer engine behind the codec's encoder and decoder.

Its frequency tables are defined by docs/engine.md and computed in integers, so they do
not depend on the CPU, the thread count or how segments and positions are batched. The
encoder therefore computes whole blocks of positions of every segment at once
(`encode_steps`, a parallel prefill), the decoder one position of every live segment at a
time over a KV cache (`lockstep`), and both get the same tables bit for bit.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ...errors import KernelUnavailableError, LimitError, UsageError
from ..host import cache_root
from . import weights as W

ARITH_VERSION = 1           # the arithmetic of docs/engine.md; bump on any change
KERNELS = ("auto", "reference", "portable", "avx2", "avx512bw", "avx512vnni", "avxvnni",
           "amx")
FREQ_BLOCK_BYTES = 256 << 20     # frequency tables held at once by the encoder


@dataclass(frozen=True)
class ExactProfile:
    """Everything besides the model that an archive's tables depend on."""
    kind: str = "exact"
    arith: int = ARITH_VERSION   # version of the integer arithmetic (docs/engine.md)
    weights: str = ""            # SHA-256 prefix of the model's integer weights
    precision: int = 24          # bits of the integer frequency tables
    seg_len: int = 2048          # most tokens in one segment (BOS not counted)
    batch: int = 64              # most segments coded together (one range-coder stream)
    window: int = 0              # 0: a segment is one window (BOS + its tokens); else the
                                 # positions of a window (BOS included), which slides by
    stride: int = 0              # `stride` tokens when full (see ExactEngine.windows)
    slide: str = ""              # how a window slides: "" rebuilds the kept context by a
                                 # prefill from BOS (llmzip 0.3.0); "shift" moves its cached
                                 # keys and values down and rotates only BOS's key again
    adapt: dict = field(default_factory=dict)   # learning rates of the codec's adaptive
                                 # models, which make the tables from the engine's logits
                                 # (codec/adapt.py); empty: the engine's tables as they are

    def to_dict(self) -> dict:
        """As archives record it: the sliding window and adaptive models only when used
        (absent keys mean none, as in the archives of llmzip 0.2, format version 5)."""
        d = asdict(self)
        for k in ("window", "stride", "slide", "adapt"):
            if not d[k]:
                del d[k]
        return d


def int_model(model) -> W.IntModel:
    """The integer weights of a registry.LoadedModel: from the cache folder, or derived
    from the float weights once (then cached). Kept on the LoadedModel."""
    key = f"exact-q{W.QUANT_VERSION}"
    with model._lock:
        if key in model._gpt:
            return model._gpt[key]
    t0 = time.perf_counter()
    m = W.load(cache_root(), model.fingerprint, model.config)
    if m is None:
        had = str(torch.float32) in model._gpt
        m = W.from_float(model.gpt(torch.float32))
        if not had:                       # the float weights were only needed for this
            with model._lock:
                model._gpt.pop(str(torch.float32), None)
        W.save(m, cache_root(), model.fingerprint)
    with model._lock:
        model._gpt[key] = m
        model.load_seconds += time.perf_counter() - t0
    return m


class LoadTracker:
    """How many CPUs this process can use now: the CPUs it may run on, less the other
    processes that are running (Linux /proc; elsewhere all of them). Results do not
    depend on the thread count, so it may follow the machine's load: two threads beside
    a busy process were many times slower than one."""

    def __init__(self, max_threads: int | None = None):
        try:
            self.cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = os.cpu_count() or 1
        self.max = max(1, min(self.cpus, max_threads or self.cpus))
        self.others = 0.0
        self.last = 0.0

    @staticmethod
    def _others() -> int | None:
        try:
            with open("/proc/stat") as f:
                running = next(int(l.split()[1]) for l in f if l.startswith("procs_running"))
            mine = 0
            for t in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{t}/stat") as f:
                        mine += f.read().rsplit(")", 1)[1].split()[0] == "R"
                except OSError:
                    pass
        except (OSError, StopIteration, ValueError):
            return None
        return max(0, running - max(mine, 1))

    def threads(self) -> int:
        now = time.monotonic()
        if now - self.last > 0.05:                     # sample at most 20 times a second
            self.last = now
            n = self._others()
            if n is not None:
                self.others = 0.7 * self.others + 0.3 * n
        return max(1, min(self.max, self.cpus - int(self.others + 0.5)))


class ExactEngine:
    """An IntModel on the fast kernels (or the reference), with lockstep decoding and
    block prefill for encoding."""

    kind = "exact"

    def __init__(self, model, profile: ExactProfile | None = None, *, kernel: str = "auto",
                 threads: int | None = None, memory_limit: int = 8 << 30):
        if kernel not in KERNELS:
            raise UsageError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        self.model = model                     # registry.LoadedModel
        self._profile = profile or ExactProfile()
        self.memory_limit = memory_limit
        self.kernel_choice = kernel
        self._kernel = None                    # built on first use (weights load then)
        self.kernel_name = ""
        self.fixed_threads = threads
        self.load = LoadTracker(threads)
        self.threads_used: dict = {}           # thread count -> forward passes run with it
        self.decoded = {"passes": 0, "steps": 0}  # lockstep's forward passes and the steps
                                                  # they served (more with guesses)

    @property
    def imodel(self) -> W.IntModel:
        return int_model(self.model)

    @property
    def weights_id(self) -> str:
        """What archives record of the integer weights: a SHA-256 prefix."""
        return self.imodel.sha256[:16]

    @property
    def profile(self) -> ExactProfile:
        """The profile, with the weights' hash once the weights are loaded."""
        if not self._profile.weights and self._kernel is not None:
            from dataclasses import replace
            self._profile = replace(self._profile, weights=self.weights_id)
        return self._profile

    def check_weights(self) -> None:
        """Refuse an archive whose integer weights are not the ones this model gives."""
        want = self._profile.weights
        if want and want != self.weights_id:
            from ...errors import EngineMismatchError
            raise EngineMismatchError(
                "integer weights", want, self.weights_id,
                "this model file gives other integer weights than the archive's: it is not "
                "the file the archive was written with, or llmzip's quantisation changed")

    @property
    def kernel(self):
        if self._kernel is None:
            self.check_weights()
            self._kernel = self._runner(self.kernel_choice)
        return self._kernel

    def _runner(self, kernel: str):
        """The model on the chosen kernels, made once per (model, kernel) and kept on the
        LoadedModel, so that every Compressor/Decompressor of a process shares the packed
        weights."""
        from .reference import ReferenceModel
        key = f"exact-q{W.QUANT_VERSION}-runner-{kernel}"
        with self.model._lock:
            if key in self.model._gpt:
                runner = self.model._gpt[key]
                self.kernel_name = getattr(getattr(runner, "k", None), "path", "reference")
                return runner
        if kernel == "reference":
            runner = ReferenceModel(self.imodel)
        else:
            from .fast import FastModel
            from .kernels import Kernels
            try:
                runner = FastModel(self.imodel, Kernels("auto" if kernel == "auto" else kernel))
            except KernelUnavailableError:
                if kernel != "auto":
                    raise
                runner = ReferenceModel(self.imodel)  # no C compiler: slow but the same
        with self.model._lock:
            self.model._gpt[key] = runner
        self.kernel_name = getattr(getattr(runner, "k", None), "path", "reference")
        return runner

    def threads(self) -> int:
        """The thread count for the next forward pass (fixed, or following the load);
        the counts used are tallied in threads_used."""
        n = self.fixed_threads or self.load.threads()
        self.threads_used[n] = self.threads_used.get(n, 0) + 1
        return n

    def kv_bytes(self, batch: int, length: int) -> int:
        from .fast import KVCache
        return KVCache.nbytes(self.model.config, self.model.config.n_layer, batch, length)

    def check_shape(self, lengths: list[int]) -> None:
        ctx = self.model.config.context_length
        W, S = self._profile.window, self._profile.stride
        if W and not (2 <= W <= ctx and 1 <= S < W):
            raise LimitError("sliding window", W, ctx, f"a window of 2..{ctx} positions "
                             "with a stride of 1..window-1 tokens")
        if self._profile.slide not in ("", "shift"):
            from ...errors import FormatError
            raise FormatError(f"unknown window slide {self._profile.slide!r}: this archive "
                              "needs a newer llmzip")
        if not W and any(n > ctx - 1 for n in lengths):
            raise LimitError("segment length", max(lengths), ctx - 1,
                             "the model's context window (BOS included) is the maximum")
        span = min(max(lengths, default=0), W) if W else max(lengths, default=0)
        need = self.kv_bytes(len(lengths), span)
        if need > self.memory_limit:
            raise LimitError("KV cache memory", need, self.memory_limit,
                             f"raise it with --memory-limit {(need >> 20) + 1}M")

    def windows(self, n: int) -> list[tuple[int, int, int]]:
        """The windows that code a segment of n tokens: (first, end, start) = tokens
        first..end-1 are coded in a window whose position 0 holds BOS and position j >= 1
        token start + j - 1, so token t is predicted at position t - start.

        Without a window (0) one window holds the whole segment. With window W and stride
        S the first holds tokens 0..W-1; window k >= 1 codes the next S tokens
        W + (k-1) S .. W + k S - 1 after the W - S tokens before them (start = k S): the
        context never shrinks below W - S tokens and never restarts from BOS alone."""
        W, S = self._profile.window, self._profile.stride
        if not W or n <= W:
            return [(0, n, 0)] if n else []
        out = [(0, W, 0)]
        while out[-1][1] < n:
            k = len(out)
            out.append((out[-1][1], min(n, W + k * S), k * S))
        return out

    def _rope_at(self, start: int) -> int:
        """The RoPE offset of a window whose tokens begin at `start`: with slide="shift"
        token j keeps the angle of position j + 1 in every window (so cached keys need no
        new rotation) and only BOS moves; otherwise positions count from BOS."""
        return start if self._profile.slide == "shift" else 0

    def learner(self, n_seg: int):
        """The dynamic evaluation of one coding run of n_seg segments (learn.Learner), or
        None where the profile has none (adapt "dyneval": its rate)."""
        rate = (self._profile.adapt or {}).get("dyneval", 0)
        if not rate:
            return None
        from .learn import Learner
        return Learner(self.kernel, n_seg, rate, precision=self._profile.precision)

    def _keep(self, ctx: torch.Tensor, live: np.ndarray, start: int, cache, run=None) -> None:
        """Fill positions 0..p0-1 of a window (BOS, then the p0 - 1 tokens kept from the
        window before) for the segments `live`: ctx (len(live), p0) holds those inputs.
        By default a prefill computes them again from BOS; with slide="shift" the previous
        window's keys and values of those tokens move down by the stride (they keep the
        context they were computed with) and only BOS is computed again, at its new
        angle (BOS sees only itself, so its key and value depend on nothing else)."""
        seg = torch.from_numpy(live)
        run = run or self.kernel
        if self._profile.slide == "shift":
            S = self._profile.stride
            run.shift(cache, seg, S, ctx.shape[1])
            run.forward(ctx[:, :1], seg, 0, cache, self.threads(), out="cache",
                        rope=self._rope_at(start))
        else:
            run.forward(ctx, seg, 0, cache, self.threads(), out="cache")

    def _inputs(self, segments, start: int, end: int) -> np.ndarray:
        """(B, end - start) model inputs of one window: BOS, then each segment's tokens
        start..end-2 (BOS pads a shorter segment)."""
        inp = np.full((len(segments), end - start), self.model.bos_id, dtype=np.int64)
        for i, s in enumerate(segments):
            part = np.asarray(s[start:end - 1], dtype=np.int64)
            inp[i, 1:1 + len(part)] = part
        return inp

    def encode_steps(self, segments, progress=None, out: str = "freqs", learner=None):
        """Yield (t, live, tables) for t = 0, 1, ...: the segments with a token t and their
        tables (len(live), V), exactly what lockstep hands to `choose` at step t, but
        computed a block of positions of every segment at a time. out="logits" yields the
        logits the tables are made from instead. A step's tables are valid until the next
        step is asked for (one buffer serves every block). With a learner (dynamic
        evaluation) the caller observes each step before asking for the next, and no block
        of positions computed together crosses one of its blocks."""
        lengths = [len(s) for s in segments]
        self.check_shape(lengths)
        if not segments or max(lengths) == 0:
            return
        lens = np.asarray(lengths)
        B, T = len(lengths), int(lens.max())
        V = self.model.config.vocab_size
        run = learner.run if learner else self.kernel
        cache = run.new_cache(B, min(T, self._profile.window or T))
        dest = None       # one buffer for every block's tables, reused (see FastModel.forward)
        with torch.inference_mode():
            for first, end, start in self.windows(T):
                live = np.nonzero(lens > first)[0]
                inp = torch.from_numpy(self._inputs([segments[i] for i in live], start, end))
                p0 = first - start                       # the first position coded
                if p0:                                   # the context kept from before
                    if learner:
                        learner.sync()
                    self._keep(inp[:, :p0], live, start, cache, run)
                block = max(1, min(end - first, FREQ_BLOCK_BYTES // (4 * V * len(live))))
                for a, b in _spans(p0, end - start, block, start, learner):
                    rows = np.nonzero(lens[live] > a + start)[0]
                    cap = None
                    if learner:
                        learner.sync()
                        cap = learner.capture()
                    if dest is None or dest.numel() < len(rows) * (b - a) * V:
                        dest = torch.empty(len(rows) * (b - a) * V, dtype=torch.int32)
                    f = run.forward(inp[rows, a:b], torch.from_numpy(live[rows]), a, cache,
                                    self.threads(), self.profile.precision, out,
                                    rope=self._rope_at(start), capture=cap, dest=dest)
                    if learner:
                        learner.captured(np.repeat(live[rows], b - a),
                                         np.tile(np.arange(a, b) + start, len(rows)), cap)
                    for q in range(a, b):
                        t = q + start
                        r = np.nonzero(lens[live[rows]] > t)[0]
                        yield t, live[rows[r]], (f[:, q - a] if len(r) == len(rows)
                                                 else f[torch.from_numpy(r), q - a]).numpy()
                        if progress is not None:
                            progress(np.asarray([segments[i][t] for i in live[rows[r]]]))

    def lockstep(self, lengths: list[int], choose, progress=None, out: str = "freqs",
                 learner=None, draft=None) -> None:
        """Step the segments one position at a time (the decoder): at step t,
        choose(t, live, tables) gets the segments with a token t and their tables (or
        logits, out="logits") and returns those tokens, which the next step feeds to the
        model. Where a window slides, the kept context is computed again from the tokens
        decoded (a prefill, as the encoder computes it).

        draft (codec/draft.py's Drafter), where given and no learner is: before a forward
        pass, draft.propose(live, limit) guesses the next k tokens of the live segments;
        the pass computes k + 1 positions (the last decoded token, then the guesses), and
        choose gets step t + j's tables only while the guesses for t .. t + j - 1 were all
        the tokens it returned. The tables are the ones single steps give (the engine's
        integers do not depend on the batch), so choose sees exactly the same calls;
        draft.passed(j, seconds) hears how many guesses were right and what the pass took."""
        self.check_shape(lengths)
        if not lengths or max(lengths) == 0:
            return
        lens = np.asarray(lengths)
        B, T = len(lengths), int(lens.max())
        run = learner.run if learner else self.kernel
        cache = run.new_cache(B, min(T, self._profile.window or T))
        gc_was = gc.isenabled()
        gc.disable()                 # a step allocates few objects; the collector cost 2%
        try:
            self._lockstep(lens, B, T, cache, choose, progress, out, run, learner,
                           None if learner else draft)
        finally:
            if gc_was:
                gc.enable()

    def _lockstep(self, lens, B, T, cache, choose, progress, out, run, learner,
                  draft=None) -> None:
        bos = self.model.bos_id
        hist = np.full((B, T + 1), bos, dtype=np.int64)   # hist[:, t + 1] = token t
        with torch.inference_mode():
            for first, end, start in self.windows(T):
                if first > start:                         # the context kept from before
                    live = np.nonzero(lens > first)[0]
                    ctx = hist[live, start:first].copy()  # tokens start..first-2 after BOS
                    ctx[:, 0] = bos
                    if learner:
                        learner.sync()
                    self._keep(torch.from_numpy(ctx), live, start, cache, run)
                rope = self._rope_at(start)
                t = first
                while t < end:
                    live = np.nonzero(lens > t)[0]
                    cap = None
                    if learner:
                        learner.sync()
                        cap = learner.capture()
                    inp = hist[live, t][:, None]
                    if draft is not None:     # guesses stay inside the window and segments
                        g = draft.propose(live, min(end, int(lens[live].min())) - t - 1)
                        if g.shape[1]:
                            inp = np.concatenate([inp, g], axis=1)
                    t0 = time.perf_counter()
                    f = run.forward(torch.from_numpy(inp), torch.from_numpy(live), t - start,
                                    cache, self.threads(), self.profile.precision, out,
                                    rope=rope, capture=cap)
                    sec = time.perf_counter() - t0
                    if learner:
                        learner.captured(live, np.full(len(live), t), cap)
                    for j in range(inp.shape[1]):
                        tokens = choose(t + j, live, f[:, j].numpy())
                        hist[live, t + j + 1] = tokens
                        if progress is not None:
                            progress(tokens)
                        if j + 1 == inp.shape[1] or not np.array_equal(tokens, inp[:, j + 1]):
                            break
                    if draft is not None:
                        draft.passed(j, sec)
                    self.decoded["passes"] += 1
                    self.decoded["steps"] += j + 1
                    t += j + 1


def _spans(a: int, end: int, block: int, start: int, learner) -> list[tuple[int, int]]:
    """Positions a..end-1 of a window (tokens a + start ..) in spans of at most `block`,
    cut where a learner's block of tokens ends."""
    out = []
    while a < end:
        b = min(end, a + block)
        if learner:
            n = learner.block
            b = min(b, (a + start) // n * n + n - start)
        out.append((a, b))
        a = b
    return out
