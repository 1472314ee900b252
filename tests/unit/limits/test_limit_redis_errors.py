"""A Redis that cannot be reached surfaces as StoreUnavailableError."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_defer.embedded_redis import free_port
from celery_defer.errors import StoreUnavailableError
from celery_defer.limits import RedisLimitBackend


def test_unreachable_redis_raises_store_unavailable() -> None:
    client = redis.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0), decode_responses=True
    )
    backend = RedisLimitBackend(client)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            backend.throttle_take("k", 1, 1000)
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        with pytest.raises(StoreUnavailableError):
            backend.lease_acquire("k", "a", 1, 1000, 1000)
    finally:
        client.close()
