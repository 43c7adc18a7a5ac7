"""The work layer: chunks of work on Ray actors that each load the model once.

    llmzip compress FILE --cluster auto           # an embedded Ray cluster, workers = cores
    llmzip compress FILE --cluster HOST:PORT      # join a running one (ray start --head)
    llmzip eval FILES --cluster auto              # one file per task

The unit of work is the single-process path's own: Compressor.plan() cuts the input into
the same chunk tasks compress() codes one after the other, each actor codes them with
Compressor.code_task(), and the driver writes the chunks in order, so the archive is byte
for byte the single-process one. Decompression hands out chunks found through the chunk
records (the random-access index, docs/format.md). The exact engine makes this safe: a
chunk coded by any worker decodes on any machine. Before any chunk is handed out every
worker reports its engine profile and model fingerprint, and a worker that would compute
other tables (the float engine on another CPU or torch; another model file) is refused.

Memory: at most `in_flight` chunks are in flight (2 per worker by default); coded chunks go
to an unlinked spool file until the header (which names the model only when a chunk uses
it) can be written; the output is renamed into place only when complete (AtomicOutput).
The driver reads its input through mmap and tokenises text in pieces of at most 64 MiB
(Compressor.plan, the same in one process). A worker that dies (killed, out of memory, its node lost) has its chunks
handed to a fresh worker; `retries` counts them.

Ray is optional (`pip install 'llmzip[ray]'`); without --cluster nothing here is imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field

from ..errors import ClusterError, LlmzipError

INSTALL_HINT = "install it with: pip install 'llmzip[ray]' (ray 2.60.0)"
SPOOL_BLOCK = 1 << 20
MAX_TRIES = 4                         # workers a chunk may be handed to before giving up


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--cluster needs Ray, which is not installed; {INSTALL_HINT}"
                           ) from None
    return ray


def local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _token_auth_if_available() -> None:
    """Joining a cluster: Ray 2.60's `ray start --head` turns token authentication on when
    a token exists (~/.ray/auth_token, which a local ray.init() creates), but a driver
    joining it sends the token only with RAY_AUTH_MODE=token. Where the mode is not set
    and a token is available, set it, as `ray start` does for the head."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(
        os.path.expanduser("~"), ".ray", "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(token_file):
        os.environ["RAY_AUTH_MODE"] = "token"


class Cluster:
    """A connection to Ray: `address` "auto" starts an embedded local cluster (workers =
    cores unless given), anything else joins the cluster at that address. If this process
    is already connected to Ray (a test, a notebook), that connection is used and left
    open."""

    def __init__(self, address: str = "auto", workers: int | None = None):
        if address != "auto":
            _token_auth_if_available()      # before Ray reads its configuration
        ray = self.ray = import_ray()
        self.started = False
        if not ray.is_initialized():
            try:
                if address == "auto":
                    ray.init(address="local", num_cpus=workers or local_cpus(),
                             include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR", configure_logging=True)
                else:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ClusterError(f"cannot start or join the Ray cluster {address!r}: {e}; "
                                   "--cluster auto starts one on this machine, --cluster "
                                   "HOST:PORT joins one started with `ray start --head` (a "
                                   "cluster with token authentication needs its token here: "
                                   "~/.ray/auth_token or $RAY_AUTH_TOKEN)") from None
            self.started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, workers or cpus)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ----------------------------------------------------------------------------- workers

class ChunkWorker:
    """One Ray actor: loads the model once (setup), then codes or decodes chunk tasks."""

    def __init__(self):
        self.comp = self.dec = self.info = None

    def setup(self, role: str, model, settings: dict, header: dict | None = None) -> dict:
        t0 = time.perf_counter()
        if role == "eval":
            from ..codec.tokenizer import tokenizer_for
            from ..engine.models.registry import load_model
            self.model = load_model(model)
            tokenizer_for(self.model)
            profile, fingerprint = None, self.model.fingerprint
        elif role == "compress":
            from ..codec.api import Compressor
            self.comp = Compressor(model, **settings)
            profile, fingerprint = self.comp.engine_profile(), self.comp.model.fingerprint
        else:
            from ..codec.decompressor import Decompressor
            from ..codec import container as ct
            self.dec = Decompressor(model, **settings)
            self.info = ct.ArchiveInfo(header=header)
            self.dec._held = (self.info, {})    # the engine decompress_chunk() will use
            profile = fingerprint = None
            if isinstance(header.get("model"), dict):
                engine = self.dec._engine_lazy(header, self.dec._held[1])  # model, weights
                if engine.kind == "exact":
                    engine.imodel                       # load the weights now, not mid-run
                profile, fingerprint = header.get("engine"), engine.model.fingerprint
        return {"pid": os.getpid(), "host": socket.gethostname(), "profile": profile,
                "fingerprint": fingerprint, "setup_seconds": time.perf_counter() - t0}

    def code(self, task):
        t0 = time.perf_counter()
        method, chunk, delta = self.comp.code_task(task)
        delta["seconds"] = time.perf_counter() - t0
        return method, chunk, delta

    def decode(self, chunk, coded: bytes):
        t0 = time.perf_counter()
        raw = self.dec.decompress_chunk(self.info, chunk, coded)
        return raw, time.perf_counter() - t0

    def score(self, data: bytes, name: str, context: int, dtype: str, stride):
        """`llmzip eval` of one file (tools/evaluate.py), on one thread."""
        from .evaluate import evaluate
        return evaluate(self.model, data, context, dtype, 1, stride, name)

    def pid(self) -> int:
        return os.getpid()


@dataclass
class PoolStats:
    workers: int = 0
    setup_seconds: list = field(default_factory=list)   # per worker (model load)
    chunks: int = 0
    retries: int = 0            # chunks handed out again after their worker died
    replaced: int = 0           # workers started to replace dead ones
    task_bytes: int = 0         # bytes sent to workers (pickled arguments, approximately)
    result_bytes: int = 0       # bytes back
    chunk_seconds: list = field(default_factory=list)   # worker time per chunk


class Pool:
    """`n` actors of one role; map() hands out tasks and yields results in order."""

    def __init__(self, cluster: Cluster, role: str, model, settings: dict,
                 header: dict | None = None, expect: dict | None = None,
                 n: int | None = None, in_flight: int | None = None):
        self.ray = cluster.ray
        self.role, self.model, self.settings, self.header = role, model, settings, header
        self.expect = expect
        self.n = n or cluster.workers
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        if self.n > cpus:
            raise ClusterError(f"{self.n} workers asked for, but the cluster has {cpus} CPUs "
                               f"(each worker takes one); use --workers {cpus} or fewer")
        self.in_flight = in_flight or 2 * self.n
        self.stats = PoolStats(workers=self.n)
        self._cls = self.ray.remote(num_cpus=1, max_restarts=0)(ChunkWorker)
        self.actors, self.infos = [], []
        self._pending: deque = deque()
        # all workers load the model at once; every one is checked before any work starts
        actors = [self._cls.remote() for _ in range(self.n)]
        self.actors = actors
        refs = [a.setup.remote(self.role, self.model, self.settings, self.header)
                for a in actors]
        try:
            for ref in refs:
                info = self._get(ref)
                self._check(info)
                self.infos.append(info)
                self.stats.setup_seconds.append(info["setup_seconds"])
        except BaseException:
            self.close()
            raise

    def _get(self, ref):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, LlmzipError):
                raise cause from None
            raise ClusterError(f"a worker failed: {type(cause).__name__}: {cause}") from e
        except ray.exceptions.UnserializableException as e:
            raise ClusterError(f"a worker failed: {e}") from None

    def _start(self):
        actor = self._cls.remote()
        try:
            info = self._get(actor.setup.remote(self.role, self.model, self.settings,
                                                self.header))
        except BaseException:
            self.ray.kill(actor)
            raise
        self._check(info)
        self.stats.setup_seconds.append(info["setup_seconds"])
        return actor, info

    def _check(self, info: dict) -> None:
        """A worker whose tables could differ is refused before it gets any chunk."""
        if self.expect is None:
            return
        for key in ("fingerprint", "profile"):
            want, got = self.expect.get(key), info.get(key)
            if want != got:
                if isinstance(want, dict) and isinstance(got, dict):
                    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
                    what = ", ".join(f"{k}={got.get(k)!r} (driver: {want.get(k)!r})"
                                     for k in diff)
                else:
                    what = f"{got!r} (driver: {want!r})"
                raise ClusterError(
                    f"worker on {info.get('host')} (pid {info.get('pid')}) has another "
                    f"engine {key}: {what}; its chunks would not decode with the others'. "
                    "Use the exact engine (the default), whose tables are the same on every "
                    "machine, or a cluster of identical machines and software")

    def busy_pids(self) -> list:
        """PIDs of workers that have a chunk in flight that has not finished (for tests)."""
        refs = [p[3] for p in self._pending]
        if not refs:
            return []
        _, not_ready = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        not_ready = set(not_ready)
        return sorted({self.infos[p[2]]["pid"] for p in self._pending if p[3] in not_ready})

    def _submit(self, i: int, task, slot: int | None = None, tries: int = 0):
        if slot is None:
            slot = i % self.n
        actor = self.actors[slot]
        ref = (actor.code.remote(task) if self.role == "compress"
               else actor.score.remote(*task) if self.role == "eval"
               else actor.decode.remote(*task))
        return [i, task, slot, ref, tries]

    def map(self, tasks, on_result=None):
        """Results of `tasks` in order; at most `in_flight` in flight. on_result(i, pool) is
        called after each result (tests kill workers from there)."""
        ray = self.ray
        dead = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError)
        it = enumerate(tasks)
        pending = self._pending
        pending.clear()

        def fill():
            while len(pending) < self.in_flight:
                nxt = next(it, None)
                if nxt is None:
                    return
                pending.append(self._submit(*nxt))

        fill()
        while pending:
            head = pending[0]
            try:
                result = self._get(head[3])
            except dead:
                self._replace(head[2])
                continue
            pending.popleft()
            self.stats.chunks += 1
            if on_result is not None:
                on_result(head[0], self)
            yield result
            fill()

    def _replace(self, slot: int) -> None:
        """The worker in `slot` died: start a fresh one (it loads the model and is checked
        like the others) and hand it every chunk the dead one had."""
        try:
            self.ray.kill(self.actors[slot])
        except Exception:                 # already gone
            pass
        for p in self._pending:
            if p[2] == slot and p[4] + 1 >= MAX_TRIES:
                raise ClusterError(f"chunk {p[0]} was handed to {MAX_TRIES} workers and each "
                                   "died (out of memory? see the Ray logs under "
                                   "/tmp/ray/session_latest/logs); nothing was written")
        self.actors[slot], self.infos[slot] = self._start()
        self.stats.replaced += 1
        for p in self._pending:
            if p[2] == slot:
                p[3] = self._submit(p[0], p[1], slot, p[4] + 1)[3]
                p[4] += 1
                self.stats.retries += 1

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:
                pass
        self.actors = []


# ----------------------------------------------------------------------------- compress

def _model_spec(model):
    """What a worker loads: a name or a path as given; a LoadedModel by its file."""
    if model is None or isinstance(model, str):
        return model
    return model.path


def compress_settings(**kw) -> dict:
    """The Compressor options that workers get (threads: 1 each unless given)."""
    kw = dict(kw)
    if kw.get("threads") is None:
        kw["threads"] = 1
    return kw


def compress_to(cluster: Cluster, data, out, model=None, *, progress=None, on_result=None,
                workers: int | None = None, in_flight: int | None = None, spool_dir=None,
                tree=None, **settings):
    """Compress `data` (bytes or an mmap) on the cluster into the binary file object
    `out`; returns (Compressor stats, PoolStats). The bytes are those of
    Compressor(model, **settings).compress(data). With `tree` (a codec.tree.TreeJob; data
    is then ignored) a directory archive, the bytes of Compressor.compress_tree()."""
    if tree is not None:
        data = b""
    from ..codec import container as ct
    from ..codec.api import Compressor
    settings = compress_settings(**settings)
    t0 = time.perf_counter()
    comp = Compressor(model, **settings)
    comp.prepare(data)
    expect = {"profile": comp.engine_profile(), "fingerprint": comp.model.fingerprint}
    # the model prepare() settled on (--model auto, or the default level's probe)
    model_for_workers = comp.model.path if comp.auto or model is None else _model_spec(model)
    from ..codec.api import Stats
    comp.stats = st = Stats(input_bytes=len(data))
    pool = Pool(cluster, "compress", model_for_workers,
                {**settings, "fallback": comp.fallback}, expect=expect, n=workers,
                in_flight=in_flight)
    try:
        def run(tasks):
            """Code `tasks` on the pool into a spool file: (spool, methods, stats deltas)."""
            spool = tempfile.TemporaryFile(dir=spool_dir)
            methods, deltas = [], []
            for method, chunk, delta in pool.map(_counting(tasks, pool.stats), on_result):
                spool.write(chunk)
                methods.append(method)
                pool.stats.chunk_seconds.append(delta.pop("seconds", 0.0))
                pool.stats.result_bytes += len(chunk)
                deltas.append(delta)
                if progress:
                    progress(struct.unpack_from("<I", chunk, 1)[0])
            return spool, methods, deltas

        spool, methods, deltas = run(comp.plan(data) if tree is None else tree.plan(comp))
        for d in deltas:
            comp.add_stats(d)
        if tree is None:
            sha, n_orig, head = _sha256(data), len(data), comp.archive_head(methods)
        else:
            sha, n_orig = tree.sha256(), tree.original_len
            head = comp.archive_head(methods, tree.header())
            st.input_bytes = n_orig
        footer = ct.footer_bytes(len(methods), n_orig, sha)
        size = len(head) + spool.tell() + len(footer)
        if tree is None and comp.whole_fallback(data):
            spool2, methods2, _ = run(comp.plan_whole(data))
            footer2 = ct.footer_bytes(len(methods2), len(data), sha)
            head2 = comp.archive_head(methods2)
            size2 = len(head2) + spool2.tell() + len(footer2)
            if size2 < size:
                spool.close()
                spool, methods, head, footer, size = spool2, methods2, head2, footer2, size2
                comp.use_whole_stats()
            else:
                spool2.close()
        out.write(head)
        spool.seek(0)
        shutil.copyfileobj(spool, out, SPOOL_BLOCK)
        out.write(footer)
        spool.close()
    finally:
        pool.close()
    for m in methods:
        name = ct.METHOD_NAMES[m]
        st.chunks[name] = st.chunks.get(name, 0) + 1
    st.output_bytes = size
    st.seconds = time.perf_counter() - t0
    return st, pool.stats


def _counting(tasks, stats: PoolStats):
    for t in tasks:
        stats.task_bytes += (len(t[1]) if t[0] == "binary"
                             else t[1].nbytes if hasattr(t[1], "nbytes") else 4 * len(t[1]))
        yield t


def _sha256(data) -> bytes:
    h = hashlib.sha256()
    mv = memoryview(data)
    for i in range(0, len(mv), 1 << 24):
        h.update(mv[i:i + (1 << 24)])
    return h.digest()


# ----------------------------------------------------------------------------- decompress

def decompress_to(cluster: Cluster, f, out, model=None, *, progress=None, on_result=None,
                  workers: int | None = None, in_flight: int | None = None, **settings):
    """Decode the archive in the seekable binary file object `f` on the cluster into `out`,
    chunk by chunk in order; checks every CRC and the whole-content SHA-256. Returns
    (original length, PoolStats)."""
    from ..codec import container as ct
    from ..codec.decompressor import Decompressor
    from ..errors import ChecksumError
    dec = Decompressor(model, **settings)
    info = dec.open_index(f)                   # every record CRC before any work
    settings = dict(settings)
    if settings.get("threads") is None:
        settings["threads"] = 1
    pool = Pool(cluster, "decompress", _model_spec(model), settings, header=info.header,
                n=workers, in_flight=in_flight)

    def tasks():
        for c in info.chunks:
            f.seek(c.offset)
            coded = f.read(c.coded_len)
            pool.stats.task_bytes += len(coded)
            yield (c, coded)

    h = hashlib.sha256()
    total = 0
    try:
        for raw, seconds in pool.map(tasks(), on_result):
            pool.stats.chunk_seconds.append(seconds)
            out.write(raw)
            h.update(raw)
            total += len(raw)
            pool.stats.result_bytes += len(raw)
            if progress:
                progress(len(raw))
    finally:
        pool.close()
    if total != info.footer.original_len:
        raise ChecksumError("original length", info.footer.original_len, total)
    if h.digest() != info.footer.sha256:
        raise ChecksumError("whole content (SHA-256)", info.footer.sha256.hex(), h.hexdigest())
    return total, pool.stats
