"""SPEC 6 and 8.3: what a run's steps leave in Redis, and for how long."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery

from celery_defer import DeferTask, create_defer, defer, keys
from celery_defer.outbox.record import ParentRef
from celery_defer.parent.attempt import close_attempt
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.steps.run_steps import Steps
from celery_defer.store import store_for

pytestmark = pytest.mark.integration


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    app = Celery("steps-state", task_cls=DeferTask, set_as_current=False)
    app.conf.update(defer_redis_url=redis_url, broker_url="memory://")
    yield app
    store_for(app).client.close()


def attempt(app: Celery, run_id: str) -> tuple[RunCapture, Steps]:
    capture = RunCapture(parent=ParentRef(run_id, run_id, "tests.parent"), app=app, eager=False)
    return capture, Steps(capture)


def test_step_ids_are_hashed_kept_under_the_prefix_with_a_ttl_cut_short_at_finalization(app):
    capture, steps = attempt(app, "run-1")
    assert steps.run("card 4242-4242", lambda: {"charged": True}) == {"charged": True}
    client = store_for(app).client
    key = store_for(app).keys.steps("run-1")
    assert client.keys("*") == [key]
    assert key.startswith("{celery_defer:") and key.endswith("}:steps:run-1")  # prefix and shard tag
    assert not any("4242" in field for field in client.hkeys(key))
    assert keys.STEPS_FINAL_TTL_S < client.ttl(key) <= keys.STEPS_TTL_S
    capture.final = True  # the attempt ended and the run finalized with it
    steps.close()
    assert 0 < client.ttl(key) <= keys.STEPS_FINAL_TTL_S


def test_a_later_attempt_gets_the_kept_value_and_indexes_restart_per_attempt(app):
    _, first = attempt(app, "run-2")
    assert [first.run("n", lambda i=i: i) for i in range(3)] == [0, 1, 2]
    _, second = attempt(app, "run-2")
    assert [second.run("n", lambda: "not called") for _ in range(4)] == [0, 1, 2, "not called"]


def test_when_two_attempts_race_on_a_step_the_first_kept_result_wins_for_both(app):
    _, one = attempt(app, "run-3")
    _, two = attempt(app, "run-3")
    one.run("warm-up", lambda: None)  # both have read the run's steps: neither knows "x"
    two.run("warm-up", lambda: None)
    assert one.run("x", lambda: "one") == "one"
    assert two.run("x", lambda: "two") == "one"


def test_defers_inside_a_step_go_to_the_outbox_with_the_result_and_lease_the_attempt(app):
    fn = create_defer(app, {"id": "receipt"}, lambda ctx: None)
    capture, steps = attempt(app, "run-4")
    token = current_capture.set(capture)
    try:
        defer("before", function=fn, data={})  # the body's own: kept only if the body returns

        def charge() -> str:
            defer("receipt", function=fn, data={"n": 1})
            return "ch_1"

        assert steps.run("charge", charge) == "ch_1"
    finally:
        current_capture.reset(token)
        close_attempt(capture)
    store = store_for(app)
    assert [record.defer_id for record in store.outbox.pending_records("run-4")] == ["receipt"]
    assert [record.defer_id for record in capture.records] == ["before"]
    assert "receipt" in capture.earlier_ids
    assert store.client.zscore(store.keys.attempts("run-4"), "run-4") is not None


def test_a_sleep_is_measured_on_redis_time_and_never_sleeps_again_once_passed(app):
    naps: list[float] = []

    def requeue(delay_s, reason):  # stands in for putting the run back on the queue
        naps.append(delay_s)

    _, steps = attempt(app, "run-5")
    steps.sleeper = requeue
    steps.sleep("nap", "300ms")
    assert 0.2 < naps[0] <= 0.3
    time.sleep(0.05)
    _, again = attempt(app, "run-5")
    again.sleeper = requeue
    again.sleep("nap", "300ms")  # re-entered early: only what is left
    assert naps[1] <= naps[0] - 0.04
    time.sleep(0.3)
    _, awake = attempt(app, "run-5")
    awake.sleeper = requeue
    awake.sleep("nap", "300ms")
    assert len(naps) == 2
