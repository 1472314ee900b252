"""SPEC section 8: nothing lost, once, bounded state, under killed workers and re-sent messages."""

from __future__ import annotations

import time

import pytest

from celery_defer.outbox.publish import publish
from celery_defer.outbox.record import DeferRecord, ParentRef, deferred_run_id
from celery_defer.store import store_for
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def recorder_copy(parent_id: str, defer_id: str, data_json: str) -> DeferRecord:
    """The record a parent run made for the ``recorder`` function: to send a copy of its run."""
    parent = ParentRef(parent_id, parent_id, "tests.integration.workerapp.parent")
    return DeferRecord(defer_id, "celery_defer.fn.recorder", "recorder", data_json, 0, parent)


@pytest.mark.parametrize("acks_late", [False, True], ids=["acks_early", "acks_late"])
def test_worker_killed_after_body_returned_still_runs_the_defer_once(
    start_worker, app_module, seen, acks_late
):
    first = start_worker(acks_late=acks_late)
    result = app_module.parent_killed.delay(7)
    wait_for(lambda: seen("killing"))
    wait_for(lambda: not first.alive())
    assert [r for r in seen("run")] == []  # killed before dispatch

    start_worker(acks_late=acks_late)  # its recovery pass (and, with acks_late, redelivery)
    runs = wait_for(lambda: seen("run"), timeout_s=30)
    # Leave time for redelivery, recovery and any duplicate to show up.
    time.sleep(6)
    runs = seen("run")
    assert [(r["defer_id"], r["parent"]) for r in runs] == [("after-kill", result.id)]


def test_worker_killed_before_a_retry_was_sent_still_runs_the_recorded_defer(start_worker, app_module, seen):
    first = start_worker()
    result = app_module.parent_retry_killed.delay()
    wait_for(lambda: seen("killing"))
    wait_for(lambda: not first.alive())
    assert seen("run") == []  # the defer was recorded for the retry, which was never sent

    start_worker()  # its recovery pass finds the attempt's lease run out
    wait_for(lambda: seen("run"), timeout_s=30)
    time.sleep(3)  # any second copy would show up by now
    runs = seen("run")
    assert [(r["defer_id"], r["parent"]) for r in runs] == [("before-retry", result.id)]


def test_a_re_sent_deferred_message_is_acknowledged_without_running(
    start_worker, app_module, seen, redis_url
):
    start_worker()
    result = app_module.parent.delay({"defers": {"once": {}}})
    wait_for(lambda: seen("run"))
    record = recorder_copy(result.id, "once", "{}")
    publish(app_module.app, [record, record])  # two more copies, as a redelivery would
    store = store_for(app_module.app)
    wait_for(lambda: store.stats.counters().get("duplicate:recorder") == 2)
    assert len(seen("run")) == 1


def test_recovery_pass_sends_a_finalized_outbox_nobody_dispatched(start_worker, app_module, seen):
    store = store_for(app_module.app)
    parent = ParentRef("orphan-run", "orphan-run", "some.task")
    record = DeferRecord("left", "celery_defer.fn.recorder", "recorder", '{"k":1}', 1, parent)
    # What a worker leaves when it dies between recording and dispatch.
    recorded = store.outbox.record("orphan-run", [record], final=True)
    # Kept in Redis time (celery_defer.redis_clock): the stamp moves by this host's offset.
    assert recorded == [record._replace(ts_ns=record.ts_ns + store.clock.offset_ns())]
    start_worker()
    runs = wait_for(lambda: seen("run"), timeout_s=20)
    assert runs[0]["run_id"] == deferred_run_id("orphan-run", "left")
    assert runs[0]["data"] == {"k": 1}
    wait_for(lambda: not store.client.exists(store.keys.outbox("orphan-run")))
    assert store.client.zcard(store.keys.finalized("orphan-run")) == 0


def test_every_key_the_library_writes_has_a_ttl_or_is_gone(start_worker, app_module, seen, redis_url):
    start_worker()
    app_module.parent.delay({"defers": {"a": {}}, "per_attempt": {"p": {}}, "retries": 1})
    app_module.parent.delay({"defers": {"b": {"fail_times": 1}}, "fail": True})
    wait_for(lambda: len(seen("run")) == 5)  # a, p-0, p-1; b twice (one retry)
    for fn_id in ("conc2", "throttled", "rated", "idem", "debounced", "after-hog"):
        app_module.fan_out.delay(fn_id, [{"k": "x", "i": i} for i in range(2)])
    app_module.fan_out.delay("single-skip", [{"k": f"x{i}"} for i in range(2)])  # never overlap
    # idem and debounced collapse their two runs into one: 2+2+2+1+1+2+2 end.
    wait_for(lambda: len(seen("end")) == 12, timeout_s=30)
    client = store_for(app_module.app).client  # db 2 of the session's Redis, or the cluster
    time.sleep(0.5)
    keys = list(client.scan_iter("{celery_defer:*"))
    assert keys, "the library wrote no state at all?"
    without_ttl = [key for key in keys if client.ttl(key) < 0]
    assert without_ttl == []
    assert not any(":outbox:" in key for key in keys)  # dispatched outboxes are deleted
    assert any(":limit:" in key for key in keys)  # flow-control state was written, with TTLs
    assert not any(":x" in key for key in keys)  # key values are hashed, never in clear


def test_a_copy_sent_while_the_run_waits_for_its_retry_does_not_start_a_second_chain(
    start_worker, app_module, seen
):
    start_worker()
    result = app_module.parent.delay({"defers": {"slow-retry": {"retry_after": "2s"}}})
    wait_for(lambda: seen("run"))  # attempt 0 ran and asked for a retry in 2 s
    record = recorder_copy(result.id, "slow-retry", '{"retry_after": "2s"}')
    publish(app_module.app, [record])  # a stray copy of attempt 0, as recovery might send
    store = store_for(app_module.app)
    wait_for(lambda: store.stats.counters().get("duplicate:recorder") == 1, timeout_s=30)
    assert [run["attempt"] for run in seen("run")] == [0, 1]


def test_worker_killed_mid_attempt_without_acks_late_still_runs_earlier_defers(
    start_worker, app_module, seen
):
    first = start_worker(acks_late=False)
    # Attempt 0 defers "early" and retries; attempt 1 sleeps, and its worker dies.
    plan = {"retries": 1, "per_attempt": {"early": {}}, "sleep_on_attempt": 1, "sleep": 60}
    result = app_module.parent.delay(plan)
    wait_for(lambda: any(p["run_id"] == result.id and p["attempt"] == 1 for p in seen("parent")))
    first.kill()  # the whole worker: no main process is left to report the loss
    start_worker(acks_late=False)
    # The attempt's lease (defer_lease=3 s) runs out, then a recovery pass finalizes the run.
    runs = wait_for(lambda: seen("run"), timeout_s=30)
    assert [(r["defer_id"], r["parent"]) for r in runs] == [("early-0", result.id)]


def test_a_retry_keeps_the_run_reserved_even_while_it_waits_on_flow_control(redis_url, app_module):
    store = store_for(app_module.app)
    assert store.claims.claim("run", "attempt-0", lease_ms=5000, attempt=0, resend="").state == "ok"
    store.claims.hand_over("run", "attempt-0", next_attempt=1, ttl_ms=5000)  # a retry is sent
    assert store.claims.claim("run", "stray-copy", lease_ms=5000, attempt=0, resend="").state == "busy"
    assert store.claims.claim("run", "attempt-1", lease_ms=5000, attempt=1, resend="").state == "ok"
    store.claims.hand_over("run", "attempt-1", next_attempt=1, ttl_ms=5000)  # attempt 1 must wait
    assert store.claims.claim("run", "stray-copy", lease_ms=5000, attempt=0, resend="").state == "busy"
    assert store.claims.claim("run", "attempt-1-again", lease_ms=5000, attempt=1, resend="").state == "ok"
    store.claims.finish("run", "attempt-1-again", outcome="succeeded")
    assert store.claims.claim("run", "stray-copy", lease_ms=5000, attempt=0, resend="").state == "done"
