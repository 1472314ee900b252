"""The broker away while parents finalize: their deferred runs are sent once it is back."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from celery import Celery

from celery_defer.embedded_redis import RedisServer
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.faults


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    """A broker of its own (durable), apart from the state store, so it can go away alone."""
    with RedisServer(durable=True) as server:
        yield server


def test_runs_a_parent_could_not_send_are_sent_when_the_broker_is_back(start_worker, seen, broker):
    start_worker(env={"CDT_BROKER_URL": f"{broker.url}/0"})
    sender = Celery("sender", broker=f"{broker.url}/0", set_as_current=False)
    plan = {"defers": {f"d{i}": {} for i in range(3)}, "sleep_on_attempt": 0, "sleep": 2}
    sender.send_task("tests.integration.workerapp.parent", args=[plan], serializer="json")
    wait_for(lambda: seen("parent"))
    broker.kill()  # the body returns, records its defers, and cannot send them
    time.sleep(6)
    assert seen("run") == []
    broker.start()
    # A recovery pass (every second here) sends them once the worker is connected again.
    wait_for(lambda: len(seen("finished")) == 3, timeout_s=40)
    time.sleep(3)
    assert Counter(run["defer_id"] for run in seen("run")) == {"d0": 1, "d1": 1, "d2": 1}
