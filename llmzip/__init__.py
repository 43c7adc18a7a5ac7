"""llmzip: lossless compression with a GPT's next-token probabilities and a range coder.

The heavy parts (torch, the model code) load on first use, so `llmzip --help` and
`python -m llmzip` start fast and a Ctrl-C during start-up is handled cleanly.
"""

__version__ = "0.14.1"

from .errors import (ArchiveError, ChecksumError, EngineMismatchError,  # noqa: E402
                     FormatError, KernelUnavailableError, LimitError, LlmzipError,
                     ModelError, ModelMismatchError, TruncatedError, UnsupportedModelError,
                     UnsupportedVersionError, UsageError, ClusterError)

_LAZY = {"compress": "codec.api", "decompress": "codec.decompressor",
         "decompress_range": "codec.decompressor", "Compressor": "codec.api",
         "Decompressor": "codec.decompressor", "open": "codec.stream", "compress_tree": "codec.tree",
         "extract": "codec.tree", "extract_file": "codec.tree", "list_archive": "codec.tree"}

__all__ = ["compress", "decompress", "decompress_range", "open", "compress_tree", "extract",
           "extract_file", "list_archive", "Compressor", "Decompressor", "__version__",
           "LlmzipError", "ArchiveError", "FormatError", "TruncatedError", "ChecksumError",
           "LimitError", "ModelError", "ModelMismatchError", "EngineMismatchError",
           "UnsupportedModelError", "UnsupportedVersionError", "UsageError",
           "KernelUnavailableError", "ClusterError"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llmzip' has no attribute {name!r}")
