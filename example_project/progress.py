"""A plain-text progress bar: ``\\r<label> [#####.....] 30/60`` on a terminal, plain lines elsewhere.

Redirected to a file or a pipe, carriage returns would pile every redraw onto
one line of the log; there it prints a line at each tenth of the way instead.
"""

from __future__ import annotations

import sys
from typing import TextIO

#: Off a terminal: one line each time this fraction of the total more is done.
LINE_STEP = 0.1


class ProgressBar:
    """Redraws one line in place on a terminal; prints a line per tenth elsewhere.

    Args:
        label: what is counted.
        total: the value that means done.
        width: characters of the bar.
        stream: where to write; ``sys.stdout`` when omitted.
        interactive: redraw in place; by default, whether ``stream`` is a terminal.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        width: int = 30,
        stream: TextIO | None = None,
        interactive: bool | None = None,
    ):
        self.label = label
        self.total = max(total, 0)
        self.width = width
        self.stream = stream or sys.stdout
        self.interactive = _is_terminal(self.stream) if interactive is None else interactive
        self._shown: int | None = None
        self._printed: int | None = None
        self._next_line = 0

    def update(self, value: int) -> None:
        value = min(max(value, 0), self.total)
        if value == self._shown:
            return
        self._shown = value
        if not self.interactive:
            if value >= self._next_line or value == self.total:
                self._print_line(value)
            return
        filled = self.width if self.total == 0 else self.width * value // self.total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {value}/{self.total}")
        self.stream.flush()

    def _print_line(self, value: int) -> None:
        self.stream.write(f"{self.label.rstrip()}: {value}/{self.total}\n")
        self.stream.flush()
        self._printed = value
        self._next_line = value + max(1, int(self.total * LINE_STEP))

    def close(self) -> None:
        if self._shown is None:
            self.update(0)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
        elif self._shown is not None and self._printed != self._shown:
            self._print_line(self._shown)  # where it stopped, if short of a step


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False
