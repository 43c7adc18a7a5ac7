"""Safe file output: temporary file in the target folder, fsync, then rename."""

from __future__ import annotations

import os
import shutil
import tempfile

from .errors import UsageError


class AtomicOutput:
    """Write to a hidden temporary file next to `path`; `commit()` renames it into place.

    Without `overwrite`, an existing file is never replaced (checked again at commit time
    with a hard link, which fails if the name appeared meanwhile). If commit() is not
    reached (error, Ctrl-C), the temporary file is removed.
    """

    def __init__(self, path: str, overwrite: bool = False, copy_stat_from: str | None = None):
        self.path = path
        self.overwrite = overwrite
        self.copy_stat_from = copy_stat_from
        if os.path.exists(path) and not overwrite:
            raise UsageError(f"{path} already exists; use -f to overwrite")
        folder = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                        suffix=".llmz-tmp")
        self.f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        if self.copy_stat_from:
            shutil.copystat(self.copy_stat_from, self.tmp)
        if self.overwrite:
            os.replace(self.tmp, self.path)
        else:
            try:
                os.link(self.tmp, self.path)
            except FileExistsError:
                self.abort()
                raise UsageError(f"{self.path} already exists; use -f to overwrite") from None
            os.unlink(self.tmp)
        self.tmp = None

    def abort(self) -> None:
        if self.tmp is not None:
            try:
                self.f.close()
            finally:
                try:
                    os.unlink(self.tmp)
                except FileNotFoundError:
                    pass
                self.tmp = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.tmp is not None:
            self.abort()
        return False
