"""``timeouts.start`` and ``timeouts.finish`` of a deferred run (SPEC section 3).

``enqueued_ms`` is stamped by the host that sent the run and ``started_ms`` by
the one that first started it; both, and every comparison with them, read the
app's Redis-time clock (``celery_defer.redis_clock``), so hosts whose clocks
disagree still agree on how long a run waited or ran.
"""

from __future__ import annotations

from celery import Celery

from celery_defer.config.options import FunctionOptions
from celery_defer.deferred.message import DeferMessage
from celery_defer.errors import DeferredRunTimeoutError
from celery_defer.store import clock_for


def now_ms(app: Celery) -> int:
    """Now, in ms since the epoch, as every host of ``app`` reads it (Redis ``TIME``)."""
    return clock_for(app).now_ms()


def check_timeouts(options: FunctionOptions, message: DeferMessage, app: Celery) -> None:
    """Raise :class:`DeferredRunTimeoutError` when the run is past a timeout.

    ``start`` counts from when the run was first enqueued until its handler
    first starts (waiting on flow control counts); ``finish`` from that start.
    """
    start_s, finish_s = options.start_timeout_s, options.finish_timeout_s
    enqueued_ms, started_ms = message.enqueued_ms, message.started_ms
    if start_s is not None and started_ms is None and enqueued_ms is not None:
        waited_s = (now_ms(app) - enqueued_ms) / 1000
        if waited_s > start_s:
            raise DeferredRunTimeoutError(
                f"not started within timeouts.start={start_s}s (waited {waited_s:.3f}s)"
            )
    if finish_s is not None and started_ms is not None:
        ran_s = (now_ms(app) - started_ms) / 1000
        if ran_s > finish_s:
            raise DeferredRunTimeoutError(
                f"not finished within timeouts.finish={finish_s}s (running {ran_s:.3f}s)"
            )


def remaining_time_limits(options: FunctionOptions, message: DeferMessage, app: Celery) -> dict[str, float]:
    """Celery time limits for the next attempt: what is left of ``timeouts.finish``."""
    finish_s = options.finish_timeout_s
    started_ms = message.started_ms
    if finish_s is None or started_ms is None:
        return {}
    remaining_s = max(finish_s - (now_ms(app) - started_ms) / 1000, 0.001)
    return {"soft_time_limit": remaining_s, "time_limit": remaining_s + 5}
