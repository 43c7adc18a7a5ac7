"""Every error llmzip raises on purpose: one base class, typed subclasses carrying data.

The CLI maps ``ArchiveError`` (and its subclasses) to exit code 2 (corrupt or unusable
archive) and every other ``LlmzipError`` to exit code 1.
"""

from __future__ import annotations


def _rebuild(cls, args, state):
    e = cls.__new__(cls)
    Exception.__init__(e, *args)
    e.__dict__.update(state)
    return e


class LlmzipError(Exception):
    """Base class of every error llmzip raises deliberately."""

    def __reduce__(self):
        # subclasses take their own arguments (ChecksumError(what, expected, actual)):
        # rebuild from the message and the fields, so the errors pickle (a Ray worker's
        # error reaches the driver as itself)
        return (_rebuild, (type(self), self.args, self.__dict__))


class ModelError(LlmzipError):
    """A model file cannot be found, read, or is of an unsupported kind."""


class UnsupportedModelError(ModelError):
    """The model file is readable but uses something llmzip does not implement."""

    def __init__(self, what: str, path: str | None = None):
        self.what = what
        self.path = path
        where = f" in {path}" if path else ""
        super().__init__(f"unsupported model{where}: {what}")


class ArchiveError(LlmzipError):
    """The archive is corrupt, truncated, or cannot be decoded here (exit code 2)."""


class FormatError(ArchiveError):
    """The bytes are not a well-formed llmzip archive."""


class TruncatedError(FormatError):
    """The archive ends before a structure it announces."""

    def __init__(self, what: str, needed: int, available: int):
        self.what, self.needed, self.available = what, needed, available
        super().__init__(
            f"truncated archive: {what} needs {needed} bytes, only {available} left")


class UnsupportedVersionError(ArchiveError):
    def __init__(self, version: int, supported):
        self.version, self.supported = version, supported
        reads = (", ".join(map(str, supported)) if isinstance(supported, (tuple, list))
                 else str(supported))
        super().__init__(
            f"archive format version {version} is not supported (this llmzip reads "
            f"version {reads}); upgrade llmzip")


class ChecksumError(ArchiveError):
    """A CRC32 or SHA-256 check failed."""

    def __init__(self, what: str, expected, actual):
        self.what, self.expected, self.actual = what, expected, actual
        super().__init__(f"checksum mismatch in {what}: expected {expected}, got {actual}")


class LimitError(ArchiveError):
    """A length or count in the archive exceeds a limit or the file's size."""

    def __init__(self, what: str, value: int, limit: int, hint: str = ""):
        self.what, self.value, self.limit = what, value, limit
        msg = f"{what} is {value}, above the limit of {limit}"
        super().__init__(msg + (f"; {hint}" if hint else ""))


class ModelMismatchError(ArchiveError):
    """The archive was made with a different model (or engine) than the one given."""

    def __init__(self, needed_name: str, needed_fingerprint: str, given_name: str,
                 given_fingerprint: str):
        self.needed_name, self.needed_fingerprint = needed_name, needed_fingerprint
        self.given_name, self.given_fingerprint = given_name, given_fingerprint
        super().__init__(
            f"archive needs model {needed_name!r} (fingerprint {needed_fingerprint[:16]}…), "
            f"but {given_name!r} (fingerprint {given_fingerprint[:16]}…) was given; "
            f"pass --model with the right model file")


class EngineMismatchError(ArchiveError):
    """The archive's engine profile (dtype, threads, torch version, ...) differs from here."""

    def __init__(self, field: str, archive_value, local_value, hint: str = ""):
        self.field, self.archive_value, self.local_value = field, archive_value, local_value
        msg = (f"archive was made with {field}={archive_value!r} but this machine has "
               f"{local_value!r}; decoding could produce different probabilities")
        super().__init__(msg + (f"; {hint}" if hint else ""))


class KernelUnavailableError(LlmzipError):
    """One of llmzip's compiled C kernels could not be built, loaded or set up: no C
    compiler, say, or no memory for its tables. `kernel` names it; `hint` says what to
    do (default: install a C compiler). Exit code 1: the archive is fine, this machine
    lacks a tool."""

    def __init__(self, reason: str, kernel: str, hint: str | None = None):
        self.reason, self.kernel = reason, kernel
        super().__init__(f"llmzip's {kernel} is unavailable: {reason}. " + (
            hint or "It is built on first use with a C compiler (install gcc, or set $CC)"))


class UsageError(LlmzipError):
    """Bad command-line or API usage (exit code 1)."""


class ClusterError(LlmzipError):
    """The work layer cannot run on the cluster asked for: Ray is not installed, the
    cluster cannot be reached, or its workers would not compute the same integers
    (exit code 1; nothing is written)."""
