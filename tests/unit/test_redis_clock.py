"""The Redis-time clock: local clock plus an offset measured against Redis TIME."""

from __future__ import annotations

import time

import pytest
import redis

from celery_defer import redis_clock
from celery_defer.redis_clock import RedisClock


class FakeRedis:
    """Answers TIME with a server clock ``skew_s`` ahead of this host, or fails."""

    def __init__(self, skew_s: float) -> None:
        self.skew_s = skew_s
        self.calls = 0
        self.down = False

    def time(self) -> tuple[int, int]:
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("down")
        now_us = time.time_ns() // 1000 + int(self.skew_s * 1e6)
        return now_us // 1_000_000, now_us % 1_000_000


def test_it_reads_redis_time_with_one_time_call_per_refresh():
    server = FakeRedis(skew_s=-30)
    clock = RedisClock(server)  # type: ignore[arg-type]
    for _ in range(100):
        assert abs(clock.now_ms() - (time.time_ns() // 1_000_000 - 30_000)) < 50
    assert server.calls == 1


def test_when_redis_is_down_it_keeps_the_last_offset_and_tries_again_later(monkeypatch):
    monkeypatch.setattr(redis_clock, "REFRESH_S", 0.0)  # every read measures again
    monkeypatch.setattr(redis_clock, "RETRY_S", 3600.0)
    server = FakeRedis(skew_s=12)
    clock = RedisClock(server)  # type: ignore[arg-type]
    first = clock.offset_ns()
    assert first == pytest.approx(12e9, abs=5e7)
    server.down = True
    assert clock.offset_ns() == first
    assert clock.offset_ns() == first
    assert server.calls == 2  # one failed try, then none until RETRY_S passed


def test_without_redis_it_is_the_local_clock():
    assert redis_clock.LOCAL_CLOCK.offset_ns() == 0
