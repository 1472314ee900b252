"""Fixtures shared by every test layer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import redis

from celery_defer.embedded_cluster import RedisClusterServers
from celery_defer.embedded_redis import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session, on a free port."""
    with RedisServer() as server:
        yield server
        # A Celery result that reached a ready state holds itself in a cycle (its on_ready
        # promise keeps the call's arguments), so it is freed by the cycle collector, at
        # any time. Celery 5.4's AsyncResult.__del__ then sends UNSUBSCRIBE to the result
        # backend whatever the state (5.7 only for a channel still subscribed): free them
        # while this server still answers, not after it stopped.
        gc.collect()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the session's redis-server, emptied after each test."""
    redis_server.start()  # a fault test may have killed it
    yield redis_server.url
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    except redis.ConnectionError:
        pass
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A private Redis Cluster (three primaries on free loopback ports), started on first use."""
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServers) -> Iterator[str]:
    """``redis+cluster://`` URL of the session's cluster, emptied after each test."""
    yield redis_cluster.url
    redis_cluster.flush()
