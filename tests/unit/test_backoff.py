"""Retry delays: exponential backoff with jitter, capped; RetryAfterError delays."""

from __future__ import annotations

import datetime as dt

import pytest

from celery_defer.deferred.retries import backoff_delay_s, retry_after_delay_s


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_doubles_keeps_half_and_jitters_the_rest(attempt):
    ceiling = min(10.0, 0.5 * 2**attempt)
    delays = {backoff_delay_s(attempt, base_s=0.5, max_s=10.0) for _ in range(200)}
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len(delays) > 1  # jittered


def test_backoff_is_capped_even_for_huge_attempts():
    assert backoff_delay_s(10_000, base_s=1.0, max_s=300.0) <= 300.0


def test_retry_after_accepts_durations_and_datetimes():
    assert retry_after_delay_s("2s") == 2.0
    assert retry_after_delay_s(dt.timedelta(minutes=1)) == 60.0
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)
    assert 28 <= retry_after_delay_s(soon) <= 30
    assert retry_after_delay_s(dt.datetime(2000, 1, 1)) == 0.0  # naive means UTC; past means now
    with pytest.raises(ValueError):
        retry_after_delay_s("soon")
