"""Copies of one deferred run's message, however many, complete it once.

The copies are the same message sent N times (as a re-sent outbox, a recovery
pass and a broker redelivery would make them): same task id, same body.
"""

from __future__ import annotations

import time
import uuid

import pytest

from celery_defer.deferred.message import build_message
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.store import store_for
from tests.faults.tally import completions, executions
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COPIES = 6


@pytest.mark.parametrize("acks_late", [False, True], ids=["acks_early", "acks_late"])
def test_copies_of_a_message_complete_once_and_the_rest_are_counted_duplicates(
    start_worker, app_module, seen, acks_late
):
    for _ in range(2):
        start_worker(acks_late=acks_late, concurrency=2)
    parent_id = f"parent-{uuid.uuid4()}"
    records = [
        DeferRecord(
            defer_id,
            "celery_defer.fn.recorder",
            "recorder",
            '{"sleep":0.5}',
            time.time_ns(),
            ParentRef(parent_id, parent_id, "tests.parent"),
        )
        for defer_id in ("a", "b")
    ]
    for _ in range(COPIES):
        for record in records:
            app_module.app.send_task(
                record.task_name,
                kwargs=build_message(record, enqueued_ms=int(time.time() * 1000)),
                task_id=record.run_id,
                serializer="json",
            )
    store = store_for(app_module.app)
    wait_for(lambda: store.stats.counters().get("duplicate:recorder", 0) == 2 * (COPIES - 1), timeout_s=40)
    time.sleep(1)  # room for a late second completion, were there one
    assert executions(seen, parent_id) == {"a": 1, "b": 1}
    assert completions(seen, parent_id, ["a", "b"]) == {"a": 1, "b": 1}
    assert store.stats.counters()["duplicate:recorder"] == 2 * (COPIES - 1)
    assert [event for event in seen("failed")] == []
