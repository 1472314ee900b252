"""One limiter suite, two backends: every test here runs against Redis and memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from celery_defer.limits import LimitBackend, MemoryLimitBackend, RedisLimitBackend


class FakeClock:
    """A millisecond clock that moves only when told to."""

    def __init__(self, start_ms: float = 1_700_000_000_000.0) -> None:
        self.now_ms = start_ms

    def __call__(self) -> float:
        return self.now_ms

    def advance(self, ms: float) -> None:
        self.now_ms += ms


class ClockedMemoryBackend(MemoryLimitBackend):
    """The memory backend on a :class:`FakeClock` the test can move."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        super().__init__(self.clock)


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> Iterator[LimitBackend]:
    """A fresh backend: Redis on the session's private server, or memory on a fake clock."""
    if request.param == "memory":
        yield ClockedMemoryBackend()
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        yield RedisLimitBackend(client)
    finally:
        client.close()


@pytest.fixture
def exact(backend: LimitBackend) -> bool:
    """True when times are exact (fake clock); Redis times drift by the test's own latency."""
    return isinstance(backend, ClockedMemoryBackend)


@pytest.fixture
def elapse(backend: LimitBackend) -> Callable[[float], None]:
    """Let ``ms`` milliseconds pass: move the fake clock, or really sleep for Redis."""
    if isinstance(backend, ClockedMemoryBackend):
        return backend.clock.advance
    return lambda ms: time.sleep(ms / 1000)
