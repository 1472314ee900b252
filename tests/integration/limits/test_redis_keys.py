"""Every key the Redis backend writes has a TTL (SPEC 8.3), and sits beside the caller's key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from celery_defer.limits import RedisLimitBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def test_every_key_expires(client: redis.Redis) -> None:
    backend = RedisLimitBackend(client)
    backend.lease_acquire("p:concurrency", "a", 1, 60_000, 120_000)
    backend.lease_acquire("p:concurrency", "b", 1, 60_000, 120_000)
    backend.lease_release("p:concurrency", "a", 12.5)
    assert backend.lease_acquire("p:concurrency", "b", 1, 60_000, 120_000).acquired
    backend.lease_acquire("p:concurrency", "c", 1, 60_000, 120_000)
    backend.throttle_take("p:throttle", 5, 2000)
    backend.rate_hit("p:rate_limit", 5, 2000)
    backend.claim_once("p:idempotency", 86_400_000, holder="run-1")
    backend.singleton_acquire("p:singleton", "a", 60_000, "skip")
    backend.debounce_push("p:debounce", "e1", "{}", 5000, None)

    ttls = {key: client.pttl(key) for key in client.scan_iter("*")}
    assert set(ttls) == {
        "p:concurrency",
        "p:concurrency:waiters",
        "p:concurrency:seen",
        "p:concurrency:avg",
        "p:throttle",
        "p:rate_limit",
        "p:idempotency",
        "p:singleton",
        "p:debounce",
    }
    assert all(ttl > 0 for ttl in ttls.values()), ttls


def test_lease_ttl_is_never_shortened(client: redis.Redis) -> None:
    backend = RedisLimitBackend(client)
    backend.lease_acquire("p:concurrency", "long", 2, 60_000, 60_000)
    backend.lease_acquire("p:concurrency", "short", 2, 1_000, 60_000)
    assert client.pttl("p:concurrency") > 50_000


def test_every_key_of_lines_and_bookings_expires(client: redis.Redis) -> None:
    backend = RedisLimitBackend(client)
    backend.lease_acquire("p:line", "a", 1, 60_000, 120_000, parcel="{}")
    backend.lease_acquire("p:line", "b", 1, 60_000, 120_000, parcel="{}")  # parked
    backend.lines_note("p:lines", "1:60000:p:line")
    backend.throttle_take("p:booking", 5, 2000, reserve=True, holder="r1")
    backend.throttle_take("p:booking", 5, 2000, reserve=True, holder="r2")  # booked
    backend.throttle_take("p:booking", 5, 2000, reserve=True, holder="r3")
    backend.throttle_begin("p:booking", "r3", 5, 2000)  # late and first: a start kept for r2
    backend.throttle_take("p:booking", 5, 2000, reserve=True, holder="r4")  # booked, still to begin

    ttls = {key: client.pttl(key) for key in client.scan_iter("*")}
    assert set(ttls) == {
        "p:line",
        "p:line:line",
        "p:line:parked",
        "p:lines",
        "p:booking",
        "p:booking:booked",
        "p:booking:began",
        "p:booking:kept",
    }
    assert all(ttl > 0 for ttl in ttls.values()), ttls
