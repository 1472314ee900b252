"""celery_defer's Redis away: at a parent's finalization, while deferred runs start,
and while the worker's main process finalizes a revoked run."""

from __future__ import annotations

import os
import signal
import time

import pytest

from celery_defer.embedded_redis import RedisServer
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.faults


def runs_by_defer_id(seen) -> dict[str, list[int]]:
    """Attempts seen per defer id: ``{"a": [0]}`` is one run, on its first attempt."""
    runs: dict[str, list[int]] = {}
    for run in seen("run"):
        runs.setdefault(run["defer_id"], []).append(run["attempt"])
    return runs


def test_defers_of_a_run_that_finalized_while_redis_was_away_are_recorded_when_it_is_back(
    start_worker, app_module, seen, state_server: RedisServer
):
    start_worker(state_url=state_server.url)
    plan = {"defers": {"a": {}, "b": {}}, "sleep_on_attempt": 0, "sleep": 1}
    app_module.parent.delay(plan)
    wait_for(lambda: seen("parent"))
    state_server.kill()  # the body returns, and records, while Redis is away
    time.sleep(3)
    assert seen("run") == []
    state_server.start()  # its data is back (AOF): nothing of it was written anyway
    wait_for(lambda: len(seen("run")) == 2, timeout_s=30)
    time.sleep(2)  # a second copy would show up by now
    assert runs_by_defer_id(seen) == {"a": [0], "b": [0]}


def test_deferred_runs_wait_20s_for_redis_without_spending_retries(
    start_worker, app_module, seen, state_server: RedisServer
):
    start_worker(state_url=state_server.url)  # runs parents; nobody serves the "parked" queue yet
    app_module.parent.delay({"parked": {f"p{i}": {} for i in range(3)}})
    wait_for(lambda: seen("parent"))
    time.sleep(1)  # the parent finalized and sent its three runs
    state_server.kill()
    start_worker(queues="parked", state_url=state_server.url)
    time.sleep(20)  # the runs start, find Redis away and wait (recorder allows 2 retries)
    assert seen("run") == []
    state_server.start()
    wait_for(lambda: len(seen("run")) == 3, timeout_s=30)
    time.sleep(2)
    assert runs_by_defer_id(seen) == {"p0": [0], "p1": [0], "p2": [0]}  # first attempts, once each


def test_a_revoke_never_stalls_the_worker_while_redis_does_not_answer(
    start_worker, app_module, seen, state_server: RedisServer
):
    start_worker(state_url=state_server.url)
    slow = app_module.parent.delay({"defers": {"x": {}}, "sleep_on_attempt": 0, "sleep": 30})
    wait_for(lambda: seen("parent"))
    state_server.pause()  # connections open, nothing answers
    try:
        app_module.app.control.revoke(slow.id, terminate=True)
        time.sleep(0.5)  # the worker's main process handles the revoke now
        began = time.monotonic()
        app_module.parent.delay({})
        wait_for(lambda: len(seen("parent")) == 2, timeout_s=60)
        # Stock Celery starts it at once; waiting on Redis would take socket timeouts.
        assert time.monotonic() - began < 5
    finally:
        state_server.resume()


def test_a_retried_run_whose_last_attempt_began_while_redis_was_away_is_still_finalized(
    start_worker, app_module, seen, state_server: RedisServer
):
    start_worker(state_url=state_server.url)
    app_module.parent.delay({"defers": {"a": {}}, "retries": 1, "retry_countdown": 2})
    wait_for(lambda: seen("parent"))
    time.sleep(0.5)  # attempt 0 recorded "a" (kept by the AOF) and sent its retry
    state_server.kill()
    wait_for(lambda: len(seen("parent")) == 2, timeout_s=10)  # attempt 1 began and ended, Redis away
    time.sleep(1)
    state_server.start()
    wait_for(lambda: seen("finished"), timeout_s=30)
    time.sleep(2)
    assert runs_by_defer_id(seen) == {"a": [0]}


def test_a_worker_stopped_while_redis_is_away_records_the_defers_it_kept_before_it_exits(
    start_worker, app_module, seen, state_server: RedisServer
):
    worker = start_worker(state_url=state_server.url)
    app_module.parent.delay({"defers": {"a": {}, "b": {}}, "sleep_on_attempt": 0, "sleep": 1})
    wait_for(lambda: seen("parent"))
    state_server.kill()  # the body returns while Redis is away: its defers wait in the process
    os.kill(worker.process.pid, signal.SIGTERM)  # warm shutdown: the run ends, then its process
    time.sleep(8)
    state_server.start()
    wait_for(lambda: not worker.alive(), timeout_s=30)
    start_worker(state_url=state_server.url)  # the worker that comes next runs what was sent
    wait_for(lambda: len(seen("run")) == 2, timeout_s=30)
    time.sleep(2)
    assert runs_by_defer_id(seen) == {"a": [0], "b": [0]}
