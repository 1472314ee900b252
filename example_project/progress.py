"""A plain-text progress bar: ``\\r<label> [#####.....] 30/60``, no dependency."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """Redraws one line in place whenever the value changes."""

    def __init__(self, label: str, total: int, *, width: int = 30, stream: TextIO | None = None):
        self.label = label
        self.total = max(total, 0)
        self.width = width
        self.stream = stream or sys.stdout
        self._shown: int | None = None

    def update(self, value: int) -> None:
        value = min(max(value, 0), self.total)
        if value == self._shown:
            return
        self._shown = value
        filled = self.width if self.total == 0 else self.width * value // self.total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {value}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        if self._shown is None:
            self.update(0)
        self.stream.write("\n")
        self.stream.flush()
