"""A run finalizing in its first attempt publishes its defers while their record travels.

SPEC 8.1 rests on the record's write leaving the worker before the publish (a
kill between them is ``test_durability``'s first test); these show what the
reply read after the publish changes: a record that fails no longer loses runs
already sent, and defers of an attempt the run did not know of are sent too.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
import redis
from celery import Celery

from celery_defer import DeferTask, create_defer, defer
from celery_defer.outbox.record import DeferRecord, ParentRef, deferred_run_id
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.store import store_for
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def test_a_record_refused_after_the_publish_loses_nothing(start_worker, app_module, seen):
    worker = start_worker()
    result = app_module.parent_record_refused.delay(3)
    wait_for(lambda: seen("run"), timeout_s=30)
    assert result.get(timeout=10) == 3
    time.sleep(3)  # recovery passes run every second: nothing is sent again
    runs = seen("run")
    assert [(run["defer_id"], run["parent"], run["data"]) for run in runs] == [
        ("unrecorded", result.id, {"n": 3})
    ]
    line = f"run {result.id}: its deferred runs were sent; recording them failed"
    assert wait_for(lambda: line in worker.log()), worker.log()[-3000:]


def _parent_body(self: DeferTask) -> None:
    """A parent task's body; the test ends its attempt by hand."""


@pytest.fixture
def app(redis_url: str) -> Celery:
    app = Celery("swr", broker=f"{redis_url}/5", task_cls=DeferTask, set_as_current=False)
    app.conf.update(defer_redis_url=f"{redis_url}/2", task_default_queue="swr")
    return app


def test_defers_of_an_attempt_the_run_did_not_know_of_are_sent_too(app, redis_url, caplog):
    email = create_defer(app, {"id": "email"}, lambda ctx: None)
    parent_task = app.task(name="swr.parent", bind=True, lazy=False, shared=False)(_parent_body)
    run_id = str(uuid.uuid4())
    parent = ParentRef(run_id, run_id, "swr.parent")
    outbox = store_for(app).outbox
    # An earlier attempt recorded "first" (a redelivery the broker did not flag:
    # this attempt began as if it were the first).
    earlier = DeferRecord("first", email.name, "email", '{"n":1}', time.time_ns(), parent)
    outbox.record(run_id, [earlier], final=False)

    capture = RunCapture(parent, app, eager=False)
    token = current_capture.set(capture)
    defer("second", function=email, data={"n": 2})
    current_capture.reset(token)
    with caplog.at_level(logging.WARNING, logger="celery_defer"):
        parent_task._end_attempt(None, capture, final=True)

    broker = redis.Redis.from_url(f"{redis_url}/5")
    sent = [json.loads(raw)["headers"]["id"] for raw in reversed(broker.lrange("swr", 0, -1))]
    assert sent == [deferred_run_id(run_id, "second"), deferred_run_id(run_id, "first")]
    assert "1 defers recorded by an earlier attempt it did not know of are sent too" in caplog.text
    state = redis.Redis.from_url(f"{redis_url}/2")
    assert wait_for(lambda: not state.exists(store_for(app).keys.outbox(run_id)))
