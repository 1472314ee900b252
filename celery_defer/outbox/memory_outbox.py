"""The outbox of eager runs (``task_always_eager``, ``.apply()``): kept in this process.

Eager runs never leave the process, so their defers need no Redis; this keeps
the defers of earlier eager attempts for the same run, as Redis does for real runs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from celery_defer.outbox.record import DeferRecord


class MemoryOutbox:
    """The outbox operations of :class:`~celery_defer.outbox.redis_outbox.RedisOutbox`, in memory."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, DeferRecord]] = {}
        self._lock = threading.Lock()

    def recorded_ids(self, run_id: str) -> set[str]:
        with self._lock:
            return set(self._runs.get(run_id, ()))

    def record(
        self, run_id: str, records: list[DeferRecord], *, final: bool, next_attempt_in_s: float = 0.0
    ) -> list[DeferRecord]:
        with self._lock:
            outbox = self._runs.setdefault(run_id, {})
            for record in records:
                outbox.setdefault(record.defer_id, record)  # first payload wins
            return list(outbox.values()) if final else []

    def finalize(self, run_id: str) -> list[DeferRecord]:
        with self._lock:
            return list(self._runs.get(run_id, {}).values())

    def complete(self, run_id: str, defer_ids: Sequence[str]) -> None:
        with self._lock:
            outbox = self._runs.get(run_id, {})
            for defer_id in defer_ids:
                outbox.pop(defer_id, None)
            if not outbox:
                self._runs.pop(run_id, None)


#: The one in-memory outbox of this process.
eager_outbox = MemoryOutbox()
