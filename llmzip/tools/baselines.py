"""Every compressor behind one small interface, and a registry of them.

In the spirit of DeepMind's ``language_modeling_is_compression``: a codec is anything with
``name``, ``compress(data) -> bytes``, ``decompress(blob) -> bytes`` and ``available()``.
The classical baselines use the strongest settings of their usual command line tools; the
llmzip codec wraps :class:`llmzip.api.Compressor`/:class:`~llmzip.api.Decompressor`.

    >>> from llmzip.baselines import get_codec, all_codecs
    >>> xz = get_codec("xz-9e")
    >>> xz.decompress(xz.compress(b"abc")) == b"abc"
    True

Round trips are never assumed: the benchmark verifies every one (pyppmd, for example, is
known to decode wrong output at some orders; see DESIGN.md).
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class CodecProtocol(Protocol):
    name: str

    def compress(self, data: bytes) -> bytes: ...

    def decompress(self, blob: bytes) -> bytes: ...

    def available(self) -> bool: ...


class Codec:
    """Base class: a named, lossless bytes -> bytes compressor.

    Subclasses set ``name`` (registry key, e.g. ``"xz-9e"``), ``label`` (what a person
    would type, e.g. ``"xz -9e"``), ``module`` (the Python module it needs) and implement
    ``_compress``/``_decompress``.
    """

    name: str = "codec"
    label: str = ""
    module: str | None = None          # importable module the codec needs
    pip_name: str | None = None        # PyPI distribution that provides it
    kind: str = "classical"            # "classical" or "llm"

    def __init__(self) -> None:
        self._mod = None
        self._reason: str | None = None

    # -- availability ---------------------------------------------------------------
    def _load(self):
        if self._mod is None and self._reason is None and self.module:
            try:
                self._mod = importlib.import_module(self.module)
            except Exception as e:                       # ImportError, broken wheels, ...
                pip = f" (pip install {self.pip_name})" if self.pip_name else ""
                self._reason = f"cannot import {self.module}{pip}: {e}"
        return self._mod

    def available(self) -> bool:
        if self.module:
            self._load()
        return self._reason is None

    def unavailable_reason(self) -> str | None:
        """Why the codec cannot run here, or None when it can."""
        self.available()
        return self._reason

    def _require(self):
        if not self.available():
            raise RuntimeError(f"codec {self.name} is unavailable: {self._reason}")
        return self._mod

    # -- coding ---------------------------------------------------------------------
    def compress(self, data: bytes) -> bytes:
        self._require()
        return self._compress(bytes(data))

    def decompress(self, blob: bytes) -> bytes:
        self._require()
        return self._decompress(bytes(blob))

    def _compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _decompress(self, blob: bytes) -> bytes:
        raise NotImplementedError

    # -- benchmark hooks --------------------------------------------------------------
    def prepare(self) -> float:
        """Load whatever the codec needs before timing; returns the seconds it took."""
        return 0.0

    def params(self) -> dict:
        """Settings that identify this configuration (part of a benchmark cell's key)."""
        return {}

    def version(self) -> str | None:
        if self.pip_name:
            try:
                from importlib.metadata import version
                return version(self.pip_name)
            except Exception:
                return None
        mod = self._load() if self.module else None
        v = getattr(mod, "__version__", None)
        return v if isinstance(v, str) else None

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label or self.name, "kind": self.kind,
                "params": self.params(), "version": self.version(),
                "available": self.available(), "reason": self.unavailable_reason()}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# ------------------------------------------------------------------------ classical codecs

class GzipCodec(Codec):
    """gzip -9 (deflate, gzip container, mtime 0 so output is reproducible)."""
    name, label, module = "gzip-9", "gzip -9", "gzip"

    def _compress(self, data):
        return self._mod.compress(data, compresslevel=9, mtime=0)

    def _decompress(self, blob):
        return self._mod.decompress(blob)

    def version(self):
        import zlib
        return zlib.ZLIB_RUNTIME_VERSION


class Bzip2Codec(Codec):
    name, label, module = "bzip2-9", "bzip2 -9", "bz2"

    def _compress(self, data):
        return self._mod.compress(data, compresslevel=9)

    def _decompress(self, blob):
        return self._mod.decompress(blob)


class XzCodec(Codec):
    """xz -9e: LZMA2 preset 9 | PRESET_EXTREME, .xz container with CRC64 (as the CLI)."""
    name, label, module = "xz-9e", "xz -9e", "lzma"

    def _compress(self, data):
        m = self._mod
        return m.compress(data, format=m.FORMAT_XZ, check=m.CHECK_CRC64,
                          preset=9 | m.PRESET_EXTREME)

    def _decompress(self, blob):
        return self._mod.decompress(blob, format=self._mod.FORMAT_XZ)


class ZstdCodec(Codec):
    """zstd -19 (frame with content size and checksum, as the CLI writes)."""
    name, label, module, pip_name = "zstd-19", "zstd -19", "zstandard", "zstandard"

    def _compress(self, data):
        return self._mod.ZstdCompressor(level=19, write_checksum=True).compress(data)

    def _decompress(self, blob):
        # frames written by compress() carry the content size
        return self._mod.ZstdDecompressor().decompress(blob)


class BrotliCodec(Codec):
    """brotli -q 11 --lgwin 24."""
    name, label, module, pip_name = "brotli-11", "brotli -q 11 -w 24", "brotli", "brotli"

    def _compress(self, data):
        return self._mod.compress(data, quality=11, lgwin=24)

    def _decompress(self, blob):
        return self._mod.decompress(blob)


class PpmdCodec(Codec):
    """PPMd variant I (PPMd8), order 6, 16 MiB model memory (pyppmd's defaults).

    The stream carries an end mark, not the length. Variant H (PPMd7) needs the length
    to decode; variant I at order 16/32 failed on some binary files in trials, which is
    why every round trip is verified.
    """
    name, label, module, pip_name = "ppmd-6", "PPMd var.I -o6 -m16M", "pyppmd", "pyppmd"

    def __init__(self, order: int = 6, mem_mib: int = 16, variant: str = "I"):
        super().__init__()
        self.order, self.mem_mib, self.variant = order, mem_mib, variant
        if (order, mem_mib, variant) != (6, 16, "I"):
            self.name = f"ppmd{variant.lower()}-{order}-{mem_mib}m"
            self.label = f"PPMd var.{variant} -o{order} -m{mem_mib}M"

    def params(self):
        return {"order": self.order, "mem_mib": self.mem_mib, "variant": self.variant}

    def _compress(self, data):
        return self._mod.compress(data, max_order=self.order, mem_size=self.mem_mib << 20,
                                  variant=self.variant)

    def _decompress(self, blob):
        return self._mod.decompress(blob, max_order=self.order, mem_size=self.mem_mib << 20,
                                    variant=self.variant)


class ZpaqCodec(Codec):
    """ZPAQ method 5 (the strongest level of the PyPI ``zpaq`` package, libzpaq 7.15).

    threads=1 gives one block (best ratio, deterministic output); hints=True lets the
    package pre-scan for text/exe like the zpaq CLI does.
    """
    name, label, module, pip_name = "zpaq-5", "zpaq -method 5", "zpaq", "zpaq"

    def _load(self):
        mod = super()._load()
        if mod is not None and not hasattr(mod, "compress"):
            self._mod, self._reason = None, "the installed zpaq module has no compress()"
        return self._mod

    def _compress(self, data):
        return self._mod.compress(data, level=5, threads=1, hints=True)

    def _decompress(self, blob):
        return self._mod.decompress(blob, threads=1)

    def params(self):
        return {"level": 5, "threads": 1, "hints": True}


class UnavailableCodec(Codec):
    """A placeholder that reports why a codec cannot run (and never runs)."""

    def __init__(self, name: str, reason: str, label: str = ""):
        super().__init__()
        self.name, self.label, self._reason = name, label or name, reason


# ----------------------------------------------------------------------------- llmzip

class LlmzipCodec(Codec):
    """llmzip with a model (registered name, GGUF path or LoadedModel) and engine settings.

    ``compressor_kwargs`` go to :class:`llmzip.api.Compressor` (engine, kernel, threads,
    batch, seg_len, memory_limit, fallback; dtype and attention for the float engine).
    ``last_stats`` holds the Stats of the last compress.
    """
    kind = "llm"

    def __init__(self, model_spec=None, **compressor_kwargs):
        super().__init__()
        from ..engine.models.registry import DEFAULT_MODEL, LoadedModel
        self.model_spec = model_spec if model_spec is not None else DEFAULT_MODEL
        self.kwargs = {k: v for k, v in compressor_kwargs.items() if v is not None}
        self.kwargs.setdefault("engine", "exact")
        self._model = model_spec if isinstance(model_spec, LoadedModel) else None
        self._comp = None
        self._decomp = None
        self.last_stats = None
        self.metadata_seconds = 0.0     # reading GGUF metadata, tokenizer, fingerprint
        self.weights_seconds = 0.0      # reading and dequantising the weights
        self._weights_loaded = False    # (0 when another user loaded them already)
        if isinstance(model_spec, LoadedModel):
            model_name = model_spec.name
        else:
            model_name = self._spec_name()
        self.name = f"llmzip-{model_name}"
        self.label = f"llmzip {model_name}"

    def _spec_name(self) -> str:
        import os
        spec = str(self.model_spec)
        from ..engine.models.registry import PACKAGED
        if spec in PACKAGED:
            return spec
        return os.path.splitext(os.path.basename(spec))[0]

    def available(self) -> bool:
        if self._model is not None:
            return True
        if self._reason is None:
            try:
                from ..engine.models.registry import resolve
                resolve(self.model_spec)
            except Exception as e:
                self._reason = str(e)
        return self._reason is None

    def _require(self):
        if not self.available():
            raise RuntimeError(f"codec {self.name} is unavailable: {self._reason}")

    @property
    def model(self):
        if self._model is None:
            import time

            from ..codec.tokenizer import tokenizer_for
            from ..engine.models.registry import load_model
            t0 = time.perf_counter()
            self._model = load_model(self.model_spec)
            tokenizer_for(self._model)
            self.metadata_seconds = time.perf_counter() - t0
        return self._model

    @property
    def compressor(self):
        if self._comp is None:
            from ..codec.api import Compressor
            self._comp = Compressor(self.model, **self.kwargs)
        return self._comp

    def prepare(self) -> float:
        """Load metadata, tokenizer and the weights the engine uses (the exact engine's
        integer weights, packed for its kernels; the float engine's in its dtype), so that
        timed compress calls exclude them; returns what loading cost this codec (the same
        on every call; about 0 where the model was already loaded in this process)."""
        import time
        from ..engine.float_engine import DTYPES, resolve_dtype
        self._require()
        m = self.model
        comp = self.compressor
        if not self._weights_loaded:
            t0 = time.perf_counter()
            if comp.engine.kind == "exact":
                comp.engine.kernel
            else:
                m.gpt(DTYPES[resolve_dtype(self.kwargs.get("dtype", "auto"))])
            self.weights_seconds = time.perf_counter() - t0
            self._weights_loaded = True
        return self.metadata_seconds + self.weights_seconds

    def _compress(self, data):
        comp = self.compressor
        blob = comp.compress(data)
        self.last_stats = comp.stats
        return blob

    def _decompress(self, blob):
        if self._decomp is None:
            from ..codec.decompressor import Decompressor
            comp = self.compressor
            threads = (self.kwargs.get("threads") if comp.engine.kind == "exact"
                       else comp.profile.threads)
            self._decomp = Decompressor(self.model, threads=threads,
                                        kernel=self.kwargs.get("kernel", "auto"),
                                        memory_limit=self.kwargs.get("memory_limit",
                                                                     8 << 30))
        return self._decomp.decompress(blob)

    def params(self) -> dict:
        p = {"model": self.name.removeprefix("llmzip-")}
        if self._comp is not None or self.available():
            try:
                comp = self.compressor
                prof = comp.profile
                p.update(engine=comp.engine.kind, batch=prof.batch, seg_len=prof.seg_len,
                         precision=prof.precision)
                if comp.engine.kind == "exact":
                    p.update(arith=prof.arith, kernel=self.kwargs.get("kernel", "auto"),
                             threads=self.kwargs.get("threads", "auto"))
                    p.update({k: v for k, v in prof.to_dict().items()   # levels 2..9
                              if k in ("window", "stride", "slide", "adapt")})
                else:
                    p.update(dtype=prof.dtype, threads=prof.threads,
                             attention=prof.attention)
                p["fingerprint"] = self.model.fingerprint[:16]
            except Exception:
                p.update({k: self.kwargs.get(k) for k in ("engine", "dtype", "threads",
                                                          "batch", "seg_len", "attention")})
        if "fallback" in self.kwargs:
            p["fallback"] = self.kwargs["fallback"]
        return p

    def version(self):
        from .. import __version__
        return __version__


# ----------------------------------------------------------------------------- registry

CLASSICAL = ("gzip-9", "bzip2-9", "xz-9e", "zstd-19", "brotli-11", "ppmd-6", "zpaq-5")

CODECS: dict[str, Callable[..., Codec]] = {
    "gzip-9": GzipCodec,
    "bzip2-9": Bzip2Codec,
    "xz-9e": XzCodec,
    "zstd-19": ZstdCodec,
    "brotli-11": BrotliCodec,
    "ppmd-6": PpmdCodec,
    "zpaq-5": ZpaqCodec,
}


def _register_llm_codecs() -> None:
    from ..engine.models.registry import PACKAGED
    for model_name in PACKAGED:
        CODECS[f"llmzip-{model_name}"] = (lambda m: lambda **kw: LlmzipCodec(m, **kw))(
            model_name)


_register_llm_codecs()

ALIASES = {"gzip": "gzip-9", "bzip2": "bzip2-9", "bz2": "bzip2-9", "xz": "xz-9e",
           "lzma": "xz-9e", "zstd": "zstd-19", "brotli": "brotli-11", "ppmd": "ppmd-6",
           "zpaq": "zpaq-5", "llmzip": "llmzip-smollm2-135m"}


def get_codec(name: str, **kwargs) -> Codec:
    """A codec by registry name or alias; ``llmzip:SPEC`` gives LlmzipCodec(SPEC).

    Keyword arguments go to the codec's constructor (for llmzip: Compressor options).
    """
    if name.startswith("llmzip:"):
        return LlmzipCodec(name.split(":", 1)[1], **kwargs)
    key = ALIASES.get(name, name)
    if key not in CODECS:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(CODECS)}")
    return CODECS[key](**kwargs)


def classical_codecs(include_unavailable: bool = False) -> list[Codec]:
    out = [CODECS[n]() for n in CLASSICAL]
    return out if include_unavailable else [c for c in out if c.available()]


def llm_codecs(include_unavailable: bool = False, **compressor_kwargs) -> list[Codec]:
    """One LlmzipCodec per registered model (installed ones unless include_unavailable)."""
    out = [CODECS[n](**compressor_kwargs) for n in CODECS if n.startswith("llmzip-")]
    return out if include_unavailable else [c for c in out if c.available()]


def all_codecs(include_unavailable: bool = False, llm: bool = True,
               **compressor_kwargs) -> list[Codec]:
    """Every classical codec, then (llm=True) one llmzip codec per installed model."""
    out = classical_codecs(include_unavailable)
    if llm:
        out += llm_codecs(include_unavailable, **compressor_kwargs)
    return out


def unavailable_codecs() -> dict[str, str]:
    """name -> reason, for registered codecs that cannot run here."""
    out = {}
    for n in CODECS:
        c = CODECS[n]()
        if not c.available():
            out[n] = c.unavailable_reason() or "unavailable"
    return out
