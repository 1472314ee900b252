"""A restart of the one Redis that is both broker and state store, with AOF fsync always."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from celery_defer.embedded_redis import RedisServer
from tests.integration.conftest import Worker, wait_for

pytestmark = pytest.mark.faults

PARENTS = 30
DEFERS = 3


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    with RedisServer(durable=True) as server:
        yield server


def test_a_durable_redis_restarted_mid_batch_loses_no_defer_and_runs_none_twice(durable_redis: RedisServer):
    worker = Worker(
        durable_redis.url, acks_late=False, queues="celery", concurrency=2, env={"CDT_FAST_RESTORE": "1"}
    )
    sender = Celery("sender", broker=f"{durable_redis.url}/0", set_as_current=False)
    state = redis.Redis.from_url(f"{durable_redis.url}/3")
    try:
        plan = {"defers": {f"d{i}": {"sleep": 0.1} for i in range(DEFERS)}}
        for _ in range(PARENTS):
            sender.send_task("tests.integration.workerapp.parent", args=[plan], serializer="json")
        wait_for(lambda: state.llen("seen") > PARENTS // 2, timeout_s=30)  # mid-batch
        durable_redis.kill()
        time.sleep(1)
        durable_redis.start()

        def finished() -> list[dict]:
            events = (json.loads(raw) for raw in state.lrange("seen", 0, -1))
            return [event for event in events if event["kind"] == "finished"]

        wait_for(lambda: len(finished()) >= PARENTS * DEFERS, timeout_s=90)
        time.sleep(5)  # late copies, redeliveries and recovery show up by now
        completions = Counter(event["run_id"] for event in finished())
        assert len(completions) == PARENTS * DEFERS  # none lost
        assert set(completions.values()) == {1}  # none twice
    finally:
        worker.stop()
        state.close()
