"""The progress bar of the command line and the tools. A leaf: anyone may import it."""

from __future__ import annotations

import sys


class Progress:
    """A tqdm bar on a terminal (bytes, bytes/s); nothing when piped or quiet."""

    def __init__(self, total: int, label: str, quiet: bool):
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True,
                            file=sys.stderr, leave=False)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
