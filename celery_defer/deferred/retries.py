"""When a deferred run that raised tries again: backoff with jitter, or the delay it asked for."""

from __future__ import annotations

import datetime as dt
import logging
import random

from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from celery_defer.config.durations import parse_duration_s
from celery_defer.config.options import FunctionOptions
from celery_defer.errors import ConfigurationError, NonRetriableError, RetryAfterError
from celery_defer.settings import Settings

logger = logging.getLogger(__name__)

#: Past this many doublings every delay is the cap anyway; it also keeps 2**n a float.
_MAX_DOUBLINGS = 30


def backoff_delay_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Delay before retry number ``attempt + 1``: ``base * 2**attempt``, capped, jittered.

    The ceiling is Celery's own exponential backoff; the jitter keeps half of it
    and randomises the other half, so retries of runs that failed together spread
    out instead of hitting a dependency at once, yet never come back at once.
    """
    ceiling = float(
        get_exponential_backoff_interval(base_s, min(attempt, _MAX_DOUBLINGS), max_s, full_jitter=False)
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_delay_s(value: object) -> float:
    """Seconds until the retry a :class:`~celery_defer.RetryAfterError` asked for."""
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    return parse_duration_s(value)


def retry_delay_s(options: FunctionOptions, settings: Settings, attempt: int, exc: Exception) -> float | None:
    """Seconds until the retry ``exc`` calls for, or ``None`` when the run fails for good."""
    # A missing or wrong setting is not transient: retrying would only fail the same way.
    if isinstance(exc, (NonRetriableError, SoftTimeLimitExceeded, ConfigurationError)):
        return None
    if attempt >= options.retries:
        return None
    if isinstance(exc, RetryAfterError):
        try:
            return retry_after_delay_s(exc.delay)
        except ValueError:
            logger.error("RetryAfterError delay %r is not a duration; using backoff", exc.delay)
    return backoff_delay_s(attempt, base_s=settings.retry_base_delay_s, max_s=settings.retry_max_delay_s)
