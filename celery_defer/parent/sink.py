"""Where recorded defers go instead of being sent, while a test captures them.

``celery_defer.testing.capture_defers`` pushes a :class:`DeferSink`; while one is
active, a finalized run's defers are handed to it instead of being published
or run in-process, and ``defer()`` from plain code (no run) is recorded in the
sink's own capture. The sink is process-wide rather than a ``ContextVar`` so it
also sees defers from runs that a test starts on other threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from celery_defer.outbox.record import DeferRecord
from celery_defer.parent.capture import RunCapture


class DeferSink(Protocol):
    """Takes recorded defers in place of the broker."""

    def take(self, record: DeferRecord, function: Any, *, in_run: bool) -> None:
        """Keep ``record``, made for ``function``; ``in_run`` is false for plain code."""

    def plain_code_capture(self, function: Any) -> RunCapture:
        """The capture that ``defer()`` calls outside any run record into."""

    def is_plain_code(self, capture: RunCapture) -> bool:
        """Whether ``capture`` is this sink's capture for plain code."""


_sinks: list[DeferSink] = []
_lock = threading.Lock()


def active_sink() -> DeferSink | None:
    """The innermost sink in use, or ``None`` when defers go their normal way."""
    return _sinks[-1] if _sinks else None


@contextmanager
def sinking(sink: DeferSink) -> Iterator[DeferSink]:
    """Send every finalized run's defers to ``sink`` for the duration of the block."""
    with _lock:
        _sinks.append(sink)
    try:
        yield sink
    finally:
        with _lock:
            _sinks.remove(sink)
