"""Messages to a deferred function that ``defer()`` never sends fail at once, once.

Each is sent raw with ``app.send_task`` to the deferred function's task name: the
run fails (state FAILURE) with one ERROR naming its task id, is never retried,
never reaches the handler, leaves no claim behind, and the worker goes on.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
import redis

from tests.faults.tally import completions
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

TASK = "celery_defer.fn.recorder"


def good_kwargs() -> dict[str, Any]:
    return {
        "event": {"name": "defer/recorder", "id": "e", "ts": 0, "seq": 0, "data": {"n": 1}},
        "parent": {"run_id": "p", "task_name": "t", "defer_id": "d"},
    }


def without(path: str) -> dict[str, Any]:
    kwargs = good_kwargs()
    head, _, tail = path.partition(".")
    if tail:
        del kwargs[head][tail]
    else:
        del kwargs[head]
    return kwargs


def with_data(data: object) -> dict[str, Any]:
    kwargs = good_kwargs()
    kwargs["event"]["data"] = data
    return kwargs


MALFORMED: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "no event": ((), without("event")),
    "no parent": ((), without("parent")),
    "no parent.run_id": ((), without("parent.run_id")),
    "data a list": ((), with_data([1, 2])),
    "data a string": ((), with_data("text")),
    "data null": ((), with_data(None)),
    "event.ts a string": ((), {**good_kwargs(), "event": {**good_kwargs()["event"], "ts": "now"}}),
    "an unknown argument": ((), {**good_kwargs(), "extra": 1}),
    "positional args": ((1, 2), good_kwargs()),
    "nothing at all": ((), {}),
}


def test_malformed_messages_fail_once_without_reaching_the_handler(start_worker, app_module, seen, redis_url):
    worker = start_worker()
    sent = {}
    for case, (args, kwargs) in MALFORMED.items():
        task_id = f"malformed-{uuid.uuid4()}"
        app_module.app.send_task(TASK, args=args, kwargs=kwargs, task_id=task_id, serializer="json")
        sent[case] = task_id
    backend = app_module.app.backend
    for task_id in sent.values():
        # The stored state, read directly: on Celery 5.4 an AsyncResult collected while
        # the Redis backend's pub/sub is busy can deadlock the test process.
        wait_for(lambda task_id=task_id: backend.get_task_meta(task_id)["status"] == "FAILURE", timeout_s=20)
    # The worker goes on: a well-formed run after them completes.
    parent = app_module.parent.delay({"defers": {"after": {}}})
    assert parent.get(timeout=20) == "ok"
    wait_for(lambda: completions(seen, parent.id, ["after"])["after"] == 1)
    time.sleep(1)  # room for a retry, were there one

    ids = set(sent.values())
    assert not [run for run in seen("run") if run["run_id"] in ids], "a malformed message reached the handler"
    assert not [event for event in seen("retry") if event["run_id"] in ids], "a malformed message was retried"
    failures = [event["run_id"] for event in seen("failed") if event["run_id"] in ids]
    assert sorted(failures) == sorted(ids)  # each failed, once
    state = redis.Redis.from_url(f"{redis_url}/2", decode_responses=True)
    assert [key for key in state.scan_iter("*") if any(task_id in key for task_id in ids)] == []
    log = worker.log()
    for case, task_id in sent.items():
        lines = [line for line in log.splitlines() if task_id in line]
        errors = [line for line in lines if re.search(r"(ERROR|CRITICAL)/", line)]
        assert len(errors) == 1, f"{case}: {errors}"
        assert "not one defer() sends" in errors[0], f"{case}: {errors[0]}"
    assert worker.alive()
