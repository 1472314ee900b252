"""Scripts that must reach a replica: a write no replica confirmed is a Redis failure.

These run on the session's single Redis, which has no replica; the failover itself is
``tests/faults/test_sentinel_failover.py``.
"""

from __future__ import annotations

import pytest
import redis

from celery_defer.errors import StoreUnavailableError
from celery_defer.keys import KeySpace
from celery_defer.outbox.redis_outbox import RedisOutbox
from celery_defer.redis_clients import connect
from celery_defer.redis_io import Scripts, batched
from celery_defer.settings import Settings

pytestmark = pytest.mark.integration


def outbox(url: str, **options: int) -> RedisOutbox:
    client = connect(url, transport_options=options)
    return RedisOutbox(client, Settings(redis_url=url), KeySpace("t"))


def test_a_write_no_replica_confirmed_fails_like_an_outage(redis_url):
    waiting = outbox(redis_url, min_replica_acks=1, replica_ack_timeout_ms=50)
    with pytest.raises(StoreUnavailableError, match="0 of 1 replicas confirmed the write within 50 ms"):
        waiting.claim_due(limit=10, lease_ms=1000)


def test_a_server_that_lost_its_scripts_gets_them_again(redis_url):
    acked = outbox(redis_url, min_replica_acks=1, replica_ack_timeout_ms=50)
    with pytest.raises(StoreUnavailableError, match="replicas confirmed"):
        acked.claim_due(limit=10, lease_ms=1000)
    redis.Redis.from_url(redis_url).script_flush()  # as on a replica just promoted
    # The script is loaded again and runs; only then does the wait fail (not NOSCRIPT).
    with pytest.raises(StoreUnavailableError, match="replicas confirmed"):
        acked.claim_due(limit=10, lease_ms=1000)


def test_a_batch_no_replica_confirmed_fails_like_an_outage(redis_url):
    client = connect(redis_url, transport_options={"min_replica_acks": 1, "replica_ack_timeout_ms": 50})
    scripts = Scripts(client, "indexes", ("take_due",))
    redis.Redis.from_url(redis_url).script_flush()  # the batch loads what it lacks, then waits
    with batched(client) as batch:
        scripts("take_due", ["t:a"], [10, 1000], doing="taking a")
        scripts("take_due", ["t:b"], [10, 1000], doing="taking b")
    with pytest.raises(StoreUnavailableError, match="0 of 1 replicas confirmed the write within 50 ms"):
        batch.execute("taking both")
