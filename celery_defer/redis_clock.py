"""One clock for times that cross hosts: Redis ``TIME``, read through a cached offset.

A deferred run carries times stamped on one host and compared on another: when
it was enqueued (``timeouts.start``), when its handler started
(``timeouts.finish``), when ``defer()`` was called (debounce keeps the latest
event by it). Host clocks disagree; Redis has one clock every host shares, the
one the Lua scripts already use (``redis_now_ms()``).

Asking Redis for every stamp would put a round trip on paths that have none
(``defer()`` itself, a run's start), so each process measures the offset of its
clock to Redis ``TIME`` and reads ``local clock + offset``: one ``TIME`` call per
:data:`REFRESH_S`, accurate to half a round trip plus the local clock's drift over
that time (far below the milliseconds these times are kept in). A script that
reads ``TIME`` anyway may hand it back (a deferred run's claim does): each such
reply counts as a measurement, so a busy worker never calls ``TIME`` itself. When Redis
cannot be reached, the last offset is kept (none yet: the local clock) and
measuring waits :data:`RETRY_S` before it is tried again.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from celery_defer.redis_clients import StoreClient

logger = logging.getLogger(__name__)

#: How long a measured offset is trusted before it is measured again.
REFRESH_S = 60.0
#: After a failed measurement, how long before the next try.
RETRY_S = 5.0


class RedisClock:
    """Redis ``TIME`` as seen from this process.

    Args:
        client: the Redis client whose server's clock is the reference, or
            ``None`` for the local clock (apps without Redis, eager runs).
    """

    def __init__(self, client: StoreClient | None) -> None:
        self._client = client
        self._offset_ns = 0
        self._due = 0.0  # time.monotonic() of the next measurement
        self._lock = threading.Lock()

    def offset_ns(self) -> int:
        """Nanoseconds to add to the local clock to read Redis time."""
        if self._client is not None and time.monotonic() >= self._due:
            with self._lock:
                if time.monotonic() >= self._due:
                    self._measure(self._client)
        return self._offset_ns

    def _measure(self, client: StoreClient) -> None:
        try:
            before = time.time_ns()
            seconds, micros = client.time()
            after = time.time_ns()
        except redis.RedisError as exc:
            self._due = time.monotonic() + RETRY_S
            logger.debug("could not read Redis TIME (%s); clock offset kept at %d ns", exc, self._offset_ns)
            return
        # The server read its clock somewhere within the round trip: its middle.
        self._offset_ns = int(seconds) * 1_000_000_000 + int(micros) * 1_000 - (before + after) // 2
        self._due = time.monotonic() + REFRESH_S

    def observe(self, server_ns: int, *, sent_ns: int, received_ns: int) -> None:
        """Take Redis time read by a call sent at ``sent_ns`` and answered at ``received_ns`` (local)."""
        with self._lock:
            self._offset_ns = server_ns - (sent_ns + received_ns) // 2
            self._due = time.monotonic() + REFRESH_S

    def guess_ms(self) -> int:
        """Redis time now by the last offset, never measuring: for a guess a script checks."""
        return (time.time_ns() + self._offset_ns) // 1_000_000

    def now_ns(self) -> int:
        """Redis time now, in ns since the epoch."""
        return time.time_ns() + self.offset_ns()

    def now_ms(self) -> int:
        """Redis time now, in ms since the epoch."""
        return self.now_ns() // 1_000_000


#: The clock of apps without a state store: the local one.
LOCAL_CLOCK = RedisClock(None)
