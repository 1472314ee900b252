"""Restarting concurrency lines whose head was lost: the recovery side of parking.

A parked run leaves the broker; only the run that frees a slot sends it. If that
never happens (the worker that was handed the send died, or the send failed, or
every holder was killed and its slots ran out), the line would wait for the next
arrival. Every worker's recovery pass therefore goes through an index of lines
with parked runs and restarts each one: lost hand-overs go back to the head and
free slots are handed out, as a release does.

The index is one zset kept apart from the guards' keys (its own, idempotent
command, run right after a run parks), so that no guard script ever touches a
key outside its guard's hash tag. A line is forgotten once nothing is parked in
it, unless a run parked in it since it was read.
"""

from __future__ import annotations

import logging

from celery_defer.keys import line_entry, parse_line_entry
from celery_defer.limits.backend import LimitBackend
from celery_defer.limits.concurrency import SendHandoffs

logger = logging.getLogger(__name__)


class Lines:
    """The index of concurrency lines with parked runs, in one backend.

    Args:
        backend: where the lines live.
        index_key: the index (``KeySpace.lines()``).
    """

    def __init__(self, backend: LimitBackend, index_key: str) -> None:
        self.backend = backend
        self.index_key = index_key

    def note(self, key: str, *, limit: int, lease_ms: int) -> None:
        """Note that a run parked in the line of ``key``; failures are logged only.

        A line left out of the index still restarts on the next arrival or release.
        """
        try:
            self.backend.lines_note(self.index_key, line_entry(key, limit=limit, lease_ms=lease_ms))
        except Exception as exc:
            logger.warning("could not note the concurrency line of %s for recovery: %s", key, exc)

    def restart_all(self, send: SendHandoffs) -> int:
        """Restart every noted line; return how many parked runs were sent.

        Raises:
            StoreUnavailableError: Redis could not be reached.
        """
        sent = 0
        for entry, noted_ms in self.backend.lines_noted(self.index_key):
            try:
                key, limit, lease_ms = parse_line_entry(entry)
            except ValueError:
                logger.error("concurrency lines index: unreadable entry %r dropped", entry)
                self.backend.lines_forget(self.index_key, entry, noted_ms)
                continue
            parked, handoffs = self.backend.line_restart(key, limit, lease_ms)
            if handoffs:
                logger.warning(
                    "concurrency line of %s had free slots and no run to send the next: "
                    "sending %d parked runs",
                    key,
                    len(handoffs),
                )
                send(handoffs)
                sent += len(handoffs)
            if parked == 0:
                self.backend.lines_forget(self.index_key, entry, noted_ms)
        return sent
