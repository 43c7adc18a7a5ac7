"""llmzip: lossless compression with a GPT's next-token probabilities and a range coder."""

__version__ = "0.1.0"

from .api import Compressor, Decompressor, compress, decompress  # noqa: E402
from .stream import open  # noqa: E402,A001
from .errors import (ArchiveError, ChecksumError, EngineMismatchError,  # noqa: E402
                     FormatError, LimitError, LlmzipError, ModelError, ModelMismatchError,
                     TruncatedError, UnsupportedModelError, UnsupportedVersionError,
                     UsageError)

__all__ = ["compress", "decompress", "open", "Compressor", "Decompressor", "__version__",
           "LlmzipError", "ArchiveError", "FormatError", "TruncatedError", "ChecksumError",
           "LimitError", "ModelError", "ModelMismatchError", "EngineMismatchError",
           "UnsupportedModelError", "UnsupportedVersionError", "UsageError"]
