"""Deferred runs through a real Redis broker and real ``celery worker`` processes."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from celery.result import AsyncResult

from celery_defer.outbox.record import deferred_run_id
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def runs_of(seen: Any, parent_id: str) -> list[dict[str, Any]]:
    return [run for run in seen("run") if run["parent"] == parent_id]


def test_success_runs_each_defer_once_linked_to_its_parent(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent.delay({"defers": {"a": {"n": 1}, "b": {"n": 2}}})
    assert result.get(timeout=20) == "ok"
    runs = wait_for(lambda: len(runs_of(seen, result.id)) == 2 and runs_of(seen, result.id))
    assert sorted((r["defer_id"], r["data"]["n"]) for r in runs) == [("a", 1), ("b", 2)]
    for run in runs:
        assert run["run_id"] == deferred_run_id(result.id, run["defer_id"])
        # The handler records its run before the worker stores the result: wait for the result.
        meta = wait_for(
            lambda run=run: (
                (m := AsyncResult(run["run_id"], app=app_module.app)._get_task_meta())
                and m["status"] != "PENDING"
                and m
            )
        )
        assert meta["parent_id"] == result.id


def test_defers_of_every_attempt_run_and_first_payload_wins(start_worker, app_module, seen):
    start_worker()
    plan = {"retries": 2, "per_attempt": {"p": {}}, "same_id": True}
    result = app_module.parent.delay(plan)
    assert result.get(timeout=20) == "ok"
    runs = wait_for(lambda: len(runs_of(seen, result.id)) == 4 and runs_of(seen, result.id))
    assert sorted(r["defer_id"] for r in runs) == ["p-0", "p-1", "p-2", "same"]
    same = next(r for r in runs if r["defer_id"] == "same")
    assert same["data"] == {"attempt": 0}


def test_an_attempt_that_ends_in_retry_starts_nothing(start_worker, app_module, seen):
    start_worker()
    plan = {"retries": 1, "per_attempt": {"p": {}}, "sleep_on_attempt": 1, "sleep": 2}
    result = app_module.parent.delay(plan)
    assert result.get(timeout=20) == "ok"
    runs = wait_for(lambda: len(runs_of(seen, result.id)) == 2 and runs_of(seen, result.id))
    last_attempt = max(p["t"] for p in seen("parent") if p["run_id"] == result.id)
    # The run finalized only after the 2 s sleep of attempt 1: nothing started before.
    assert min(r["t"] for r in runs) >= last_attempt + 1.9


def test_final_failure_still_runs_the_defers(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent.delay({"defers": {"x": {}}, "fail": True})
    with pytest.raises(ValueError):
        result.get(timeout=20)
    runs = wait_for(lambda: runs_of(seen, result.id))
    assert [r["defer_id"] for r in runs] == ["x"]


def test_revoke_terminate_runs_what_earlier_attempts_recorded(start_worker, app_module, seen):
    start_worker()
    plan = {"retries": 1, "per_attempt": {"p": {}}, "defers": {"keep": {}}, "sleep_on_attempt": 1}
    result = app_module.parent.delay(plan)
    wait_for(lambda: any(p["run_id"] == result.id and p["attempt"] == 1 for p in seen("parent")))
    result.revoke(terminate=True)
    wait_for(lambda: len(runs_of(seen, result.id)) >= 2 and runs_of(seen, result.id))
    time.sleep(1.0)
    # p-1 was made by the attempt that never returned: it was never recorded.
    assert sorted(r["defer_id"] for r in runs_of(seen, result.id)) == ["keep", "p-0"]


def test_hard_time_limit_runs_what_earlier_attempts_recorded(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent_time_limit.delay()
    wait_for(lambda: runs_of(seen, result.id), timeout_s=30)
    time.sleep(1.0)
    assert [r["defer_id"] for r in runs_of(seen, result.id)] == ["before-limit"]


def test_a_deferred_handler_can_defer(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent.delay({"nest": True})
    nest_run = deferred_run_id(result.id, "nest")
    child = wait_for(lambda: runs_of(seen, nest_run))
    assert child[0]["defer_id"] == "child"
    assert child[0]["data"] == {"from": nest_run}


def test_handler_retries_with_backoff_then_succeeds(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent.delay({"defers": {"flaky": {"fail_times": 2}}})
    runs = wait_for(lambda: len(runs_of(seen, result.id)) == 3 and runs_of(seen, result.id))
    assert [r["attempt"] for r in runs] == [0, 1, 2]
    run_result = AsyncResult(runs[0]["run_id"], app=app_module.app)
    wait_for(lambda: run_result.state == "SUCCESS")


def test_retries_are_bounded_and_non_retriable_fails_at_once(start_worker, app_module, seen):
    start_worker()
    plan = {"defers": {"always": {"fail_times": 99}, "stop": {"non_retriable": True}}}
    result = app_module.parent.delay(plan)
    always = AsyncResult(deferred_run_id(result.id, "always"), app=app_module.app)
    stop = AsyncResult(deferred_run_id(result.id, "stop"), app=app_module.app)
    wait_for(lambda: always.state == "FAILURE" and stop.state == "FAILURE")
    attempts = Counter(r["defer_id"] for r in runs_of(seen, result.id))
    assert attempts == {"always": 3, "stop": 1}  # recorder has retries=2


def test_receiver_side_schema_failure_fails_with_retries(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent.delay({"picky": True})
    picky = AsyncResult(deferred_run_id(result.id, "picky"), app=app_module.app)
    wait_for(lambda: picky.state == "FAILURE")
    assert "rejected by the receiver" in repr(picky.result)
    assert runs_of(seen, result.id) == []  # the handler never ran


def test_runs_are_enqueued_in_call_order_with_parent_ids(start_worker, app_module, redis_url):
    import json

    import redis

    start_worker()  # consumes the default queue only: 'parked' runs stay queued
    ids = [f"d{i}" for i in range(10)]
    plan = {"parked": {i: {"i": n} for n, i in enumerate(ids)}}
    result = app_module.parent.apply_async([plan], root_id="the-root", parent_id="the-root")
    assert result.get(timeout=20) == "ok"
    broker = redis.Redis.from_url(f"{redis_url}/0")
    keys = wait_for(lambda: [k for k in broker.keys("parked*")])
    messages = [json.loads(raw) for key in keys for raw in broker.lrange(key, 0, -1)]
    messages.reverse()  # kombu pushes on the left and pops on the right
    assert [m["headers"]["id"] for m in messages] == [deferred_run_id(result.id, i) for i in ids]
    for message in messages:
        assert message["headers"]["parent_id"] == result.id
        assert message["headers"]["root_id"] == "the-root"
        assert message["properties"]["priority"] == 3
        assert message["content-type"] == "application/json"  # though the app's default is msgpack


def test_a_soft_time_limit_is_a_final_failure_that_runs_the_defers(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent_soft_limit.delay()
    runs = wait_for(lambda: runs_of(seen, result.id), timeout_s=20)
    assert [r["defer_id"] for r in runs] == ["before-soft-limit"]
    assert result.state == "FAILURE"


def test_timeouts_start_cancels_a_run_that_waited_too_long(start_worker, app_module, seen):
    start_worker()  # the parent runs now; nobody consumes the 'late' queue yet
    result = app_module.parent.delay({"impatient": True})
    assert result.get(timeout=20) == "ok"
    time.sleep(2)
    start_worker(queues="late")
    run = AsyncResult(deferred_run_id(result.id, "impatient"), app=app_module.app)
    wait_for(lambda: run.state == "FAILURE")
    assert "timeouts.start" in repr(run.result)
    assert runs_of(seen, result.id) == []  # the handler never ran
    assert run._get_task_meta()["retries"] == 0


def test_timeouts_finish_cancels_a_run_that_runs_too_long(start_worker, app_module, seen):
    start_worker()
    result = app_module.parent.delay({"slowpoke": True})
    run = AsyncResult(deferred_run_id(result.id, "slowpoke"), app=app_module.app)
    wait_for(lambda: run.state == "FAILURE")
    assert "SoftTimeLimitExceeded" in repr(run.result)
    assert [r["attempt"] for r in runs_of(seen, result.id)] == [0]  # failed, not retried
