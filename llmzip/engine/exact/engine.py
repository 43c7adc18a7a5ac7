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
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ...errors import KernelUnavailableError, LimitError, UsageError
from ..host import cache_root
from . import weights as W

ARITH_VERSION = 1           # the arithmetic of docs/engine.md; bump on any change
KERNELS = ("auto", "reference", "portable", "avx2", "avx512bw", "avx512vnni", "avxvnni")
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

    def to_dict(self) -> dict:
        return asdict(self)


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
        if any(n > ctx - 1 for n in lengths):
            raise LimitError("segment length", max(lengths), ctx - 1,
                             "the model's context window (BOS included) is the maximum")
        need = self.kv_bytes(len(lengths), max(lengths, default=0))
        if need > self.memory_limit:
            raise LimitError("KV cache memory", need, self.memory_limit,
                             f"raise it with --memory-limit {(need >> 20) + 1}M")

    def _inputs(self, segments) -> np.ndarray:
        """(B, T) model inputs: BOS, then each segment's tokens but its last (BOS pads)."""
        B, T = len(segments), max(len(s) for s in segments)
        inp = np.full((B, T), self.model.bos_id, dtype=np.int64)
        for i, s in enumerate(segments):
            inp[i, 1:len(s)] = np.asarray(s[:-1], dtype=np.int64)
        return inp

    def encode_steps(self, segments, progress=None):
        """Yield (t, live, freqs) for t = 0, 1, ...: the segments with a token t and their
        tables (len(live), V), exactly what lockstep hands to `choose` at step t, but
        computed a block of positions of every segment at a time."""
        lengths = [len(s) for s in segments]
        self.check_shape(lengths)
        if not segments or max(lengths) == 0:
            return
        lens = np.asarray(lengths)
        inp = torch.from_numpy(self._inputs(segments))
        B, T = inp.shape
        V = self.model.config.vocab_size
        cache = self.kernel.new_cache(B, T)
        block = max(1, min(T, FREQ_BLOCK_BYTES // (4 * V * B)))
        with torch.inference_mode():
            for t0 in range(0, T, block):
                t1 = min(T, t0 + block)
                live = np.nonzero(lens > t0)[0]
                f = self.kernel.forward(inp[live, t0:t1], torch.from_numpy(live), t0, cache,
                                        self.threads(), self.profile.precision)
                for t in range(t0, t1):
                    rows = np.nonzero(lens[live] > t)[0]
                    yield t, live[rows], (f[:, t - t0] if len(rows) == len(live) else f[torch.from_numpy(rows), t - t0]).numpy()
                    if progress is not None:
                        progress(np.asarray([segments[i][t] for i in live[rows]]))

    def lockstep(self, lengths: list[int], choose, progress=None) -> None:
        """Step the segments one position at a time (the decoder): at step t,
        choose(t, live, freqs) gets the segments with a token t and their tables and
        returns those tokens, which the next step feeds to the model."""
        self.check_shape(lengths)
        if not lengths or max(lengths) == 0:
            return
        lens = np.asarray(lengths)
        B, T = len(lengths), int(lens.max())
        cache = self.kernel.new_cache(B, T)
        nxt = np.full(B, self.model.bos_id, dtype=np.int64)
        gc_was = gc.isenabled()
        gc.disable()                 # a step allocates few objects; the collector cost 2%
        try:
            self._lockstep(lens, B, T, cache, nxt, choose, progress)
        finally:
            if gc_was:
                gc.enable()

    def _lockstep(self, lens, B, T, cache, nxt, choose, progress) -> None:
        with torch.inference_mode():
            for t in range(T):
                live = np.nonzero(lens > t)[0]
                f = self.kernel.forward(torch.from_numpy(nxt[live])[:, None],
                                        torch.from_numpy(live), t, cache, self.threads(),
                                        self.profile.precision)
                tokens = choose(t, live, f[:, 0].numpy())
                nxt[live] = tokens
                if progress is not None:
                    progress(tokens)
