"""Done markers: a late copy of a finished run is acknowledged unrun for ``defer_done_ttl``,
and the markers leave Redis once their retention (at most twice that) is over."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from celery_defer.outbox.publish import publish
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.settings import Settings
from celery_defer.store import Store, store_for
from tests.faults.tally import completions, executions
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

#: ``defer_done_ttl`` of these tests: seconds stand in for the 7 days of production.
TTL_S = 4.0


def recorder_run(parent_id: str) -> DeferRecord:
    parent = ParentRef(parent_id, parent_id, "tests.integration.workerapp.parent")
    return DeferRecord("late", "celery_defer.fn.recorder", "recorder", "{}", time.time_ns(), parent)


def done_keys(state: redis.Redis) -> list[str]:
    return [key for key in state.scan_iter("*") if ":done:" in key]


def test_a_late_copy_is_acknowledged_unrun_and_the_markers_expire_after_retention(
    start_worker, app_module, seen, redis_url
):
    start_worker(env={"CDT_DONE_TTL_S": str(TTL_S)})
    state = redis.Redis.from_url(f"{redis_url}/2", decode_responses=True)
    parent_id = f"parent-{uuid.uuid4()}"
    record = recorder_run(parent_id)
    publish(app_module.app, [record])
    wait_for(lambda: completions(seen, parent_id, ["late"])["late"] == 1)
    finished = time.monotonic()
    assert done_keys(state)
    # SPEC 8.3: every key the library keeps has a TTL, the markers' buckets too.
    assert [key for key in state.scan_iter("*") if state.pttl(key) < 0] == []
    assert all(state.pttl(key) <= 2 * TTL_S * 1000 for key in done_keys(state))

    # Late by most of the retention (what "hours after" is with the 7-day default).
    time.sleep(max(0.0, finished + 0.75 * TTL_S - time.monotonic()))
    publish(app_module.app, [record])
    store = store_for(app_module.app)
    wait_for(lambda: store.stats.counters().get("duplicate:recorder", 0) == 1)
    assert executions(seen, parent_id) == {"late": 1}
    assert completions(seen, parent_id, ["late"]) == {"late": 1}

    # Retention is at most twice the ttl: then nothing of the run is left.
    wait_for(lambda: not done_keys(state), timeout_s=finished + 2 * TTL_S + 1 - time.monotonic())


def test_markers_are_found_across_a_generation_boundary_and_go_after_two(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/4", decode_responses=True)
    store = Store.build(client, Settings(redis_url=redis_url, done_ttl_s=1.0))
    claims = store.claims
    # Generations are whole seconds here: write early in one, read early in the next
    # (a marker is kept at least one ttl, so one read 1.05 s after a write made late
    # in a generation may rightly find it gone).
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    for n in range(20):
        assert claims.claim(f"run-{n}", "a", lease_ms=5000, attempt=0, resend="m").state == "ok"
        claims.finish(f"run-{n}", "a", outcome="failed" if n % 2 else "succeeded")
    time.sleep(1.0 - time.time() % 1.0 + 0.05)  # the next generation began: markers come from the one before
    for n in range(20):
        found = claims.claim(f"run-{n}", "b", lease_ms=5000, attempt=0, resend="m")
        assert (found.state, found.detail) == ("done", "failed" if n % 2 else "succeeded")
        assert claims.message_to_resend(f"run-{n}") is None
    # Two generations later the buckets expired: a copy now would run (retention is over).
    wait_for(lambda: not done_keys(client), timeout_s=2.5)
    assert claims.claim("run-0", "c", lease_ms=5000, attempt=0, resend="m").state == "ok"


def test_a_process_clock_far_off_still_finds_and_writes_the_markers_of_now(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/4", decode_responses=True)
    store = Store.build(client, Settings(redis_url=redis_url, done_ttl_s=60.0))
    store.claims.finish("run-1", "", outcome="dropped")
    # Its clock two hours off: every guess of the generation is wrong; Redis TIME decides.
    skewed = Store.build(client, Settings(redis_url=redis_url, done_ttl_s=60.0))
    skewed.clock.observe(time.time_ns() + 7200 * 10**9, sent_ns=time.time_ns(), received_ns=time.time_ns())
    assert skewed.claims.claim("run-1", "b", lease_ms=5000, attempt=0, resend="").detail == "dropped"
    skewed.clock.observe(time.time_ns() - 7200 * 10**9, sent_ns=time.time_ns(), received_ns=time.time_ns())
    skewed.claims.finish("run-2", "", outcome="revoked")
    assert store.claims.claim("run-2", "c", lease_ms=5000, attempt=0, resend="").detail == "revoked"
