"""``timeouts.start`` and ``timeouts.finish`` of a deferred run (SPEC section 3)."""

from __future__ import annotations

import time

from celery_defer.config.options import FunctionOptions
from celery_defer.deferred.message import DeferMessage
from celery_defer.errors import DeferredRunTimeoutError


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_timeouts(options: FunctionOptions, message: DeferMessage) -> None:
    """Raise :class:`DeferredRunTimeoutError` when the run is past a timeout.

    ``start`` counts from when the run was first enqueued until its handler
    first starts (waiting on flow control counts); ``finish`` from that start.
    """
    start_s, finish_s = options.start_timeout_s, options.finish_timeout_s
    enqueued_ms, started_ms = message.enqueued_ms, message.started_ms
    if start_s is not None and started_ms is None and enqueued_ms is not None:
        waited_s = (now_ms() - enqueued_ms) / 1000
        if waited_s > start_s:
            raise DeferredRunTimeoutError(
                f"not started within timeouts.start={start_s}s (waited {waited_s:.3f}s)"
            )
    if finish_s is not None and started_ms is not None:
        ran_s = (now_ms() - started_ms) / 1000
        if ran_s > finish_s:
            raise DeferredRunTimeoutError(
                f"not finished within timeouts.finish={finish_s}s (running {ran_s:.3f}s)"
            )


def remaining_time_limits(options: FunctionOptions, message: DeferMessage) -> dict[str, float]:
    """Celery time limits for the next attempt: what is left of ``timeouts.finish``."""
    finish_s = options.finish_timeout_s
    started_ms = message.started_ms
    if finish_s is None or started_ms is None:
        return {}
    remaining_s = max(finish_s - (now_ms() - started_ms) / 1000, 0.001)
    return {"soft_time_limit": remaining_s, "time_limit": remaining_s + 5}
