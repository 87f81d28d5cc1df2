"""A one-line progress counter on stderr for long commands (the runtime depends on nothing but numpy,
OpenCV and a backend)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress("fuse", 10) as bar: bar.update(3)`` rewrites ``fuse 3/10 (4.1 s)`` in place on a
    terminal; silent when ``quiet``, when the stream is not a terminal, and for its first ``delay`` seconds."""

    def __init__(self, label: str, total: int, quiet: bool = False, delay: float = 0.5,
                 stream: TextIO = sys.stderr) -> None:
        self.label, self.total, self.delay, self.stream = label, total, delay, stream
        self.shown = not quiet and stream.isatty()
        self.start = time.perf_counter()
        self.printed = False

    def update(self, done: int) -> None:
        """Show that ``done`` of ``total`` are finished."""
        elapsed = time.perf_counter() - self.start
        if self.shown and elapsed >= self.delay:
            self.stream.write(f"\r{self.label} {done}/{self.total} ({elapsed:.1f} s)")
            self.stream.flush()
            self.printed = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.printed:
            self.stream.write("\n")
