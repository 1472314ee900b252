"""Retry delays of deferred runs: exponential backoff with jitter."""

from __future__ import annotations

import datetime as dt
import random

from celery_defer.durations import parse_duration_s


def backoff_delay_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Delay before retry number ``attempt + 1``: ``base * 2**attempt``, capped, jittered.

    The jitter keeps half the delay and randomises the other half, so retries of
    runs that failed together spread out instead of hitting a dependency at once.
    """
    ceiling = min(max_s, base_s * float(2 ** min(attempt, 30)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_delay_s(value: object) -> float:
    """Seconds until the retry a :class:`~celery_defer.RetryAfterError` asked for."""
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    return parse_duration_s(value)
