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
