"""A one-line progress counter on stderr for long commands (the runtime depends on nothing but numpy,
OpenCV and a backend)."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """``with Progress("fuse", 10) as bar: bar.update(3)`` rewrites ``fuse 3/10 (4.1 s)`` in place on a
    terminal; silent when ``quiet``, when the stream is not a terminal, and for its first ``delay`` seconds.
    A ``total`` of None (an endless stream) shows the count alone; a ``unit`` adds the rate, ``12.5 frames/s``."""

    def __init__(self, label: str, total: Optional[int], quiet: bool = False, delay: float = 0.5,
                 stream: Optional[TextIO] = None, unit: str = "") -> None:
        self.label, self.total, self.delay, self.unit = label, total, delay, unit
        self.stream = stream or sys.stderr  # looked up now, so a redirected stderr is followed
        self.shown = not quiet and self.stream.isatty()
        self.start = time.perf_counter()
        self.printed = False

    def update(self, done: int) -> None:
        """Show that ``done`` of ``total`` are finished."""
        elapsed = time.perf_counter() - self.start
        if self.shown and elapsed >= self.delay:
            total = "" if self.total is None else f"/{self.total}"
            rate = f", {done / elapsed:.2f} {self.unit}/s" if self.unit else ""
            self.stream.write(f"\r{self.label} {done}{total} ({elapsed:.1f} s{rate})")
            self.stream.flush()
            self.printed = True

    def note(self, text: str) -> None:
        """Write ``text`` on a line of its own (whatever ``quiet`` says): warnings between updates."""
        self._end_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.printed:
            self.stream.write("\n")
            self.printed = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_line()
