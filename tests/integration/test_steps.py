"""SPEC 6 with real workers: kept steps, their defers under kills and revokes, step.sleep."""

from __future__ import annotations

import time

import pytest
import redis

from celery_defer import keys
from celery_defer.store import store_for
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def body_runs(redis_url: str, name: str) -> int:
    """How often a step's body ran (workerapp.count_body)."""
    return int(redis.Redis.from_url(f"{redis_url}/3").get(f"body:{name}") or 0)


@pytest.mark.parametrize("acks_late", [False, True], ids=["acks_early", "acks_late"])
def test_worker_killed_right_after_a_step_that_deferred_runs_the_defer_once(
    start_worker, app_module, seen, redis_url, acks_late
):
    first = start_worker(acks_late=acks_late)
    result = app_module.step_parent.delay({"kill": True})
    wait_for(lambda: seen("killing"))
    wait_for(lambda: not first.alive())
    assert seen("run") == []  # the body never returned: nothing was sent

    # acks_late off: the attempt's lease runs out and a recovery pass finalizes the run.
    # acks_late on: the message is redelivered, the kept step is skipped, the run ends.
    # Started past the broker's visibility_timeout (3 s), the new worker's first sweep of
    # unacknowledged messages (kombu's restore_visible) puts the killed attempt's back.
    time.sleep(3.5)
    start_worker(acks_late=acks_late)
    wait_for(lambda: seen("run"), timeout_s=30)
    time.sleep(6)  # room for a duplicate from redelivery or recovery to show up
    assert [(r["defer_id"], r["parent"]) for r in seen("run")] == [("in-step", result.id)]
    assert body_runs(redis_url, result.id) == 1
    if acks_late:
        assert [s["charged"] for s in seen("stepped")] == [{"executions": 1}] * 2


def test_revoke_with_terminate_after_a_step_sends_the_steps_defers(start_worker, app_module, seen, redis_url):
    start_worker()
    result = app_module.step_parent.delay({"sleep": 60})
    wait_for(lambda: seen("stepped"))
    app_module.app.control.revoke(result.id, terminate=True)
    runs = wait_for(lambda: seen("run"), timeout_s=20)
    assert [(r["defer_id"], r["parent"]) for r in runs] == [("in-step", result.id)]
    store = store_for(app_module.app)
    # The run finalized: its kept steps expire soon instead of waiting out a week.
    wait_for(lambda: 0 < store.client.ttl(store.keys.steps(result.id)) <= keys.STEPS_FINAL_TTL_S)


def test_step_sleep_frees_the_worker_slot_and_skips_earlier_steps_on_waking(
    start_worker, app_module, seen, redis_url
):
    start_worker(concurrency=1)
    sleeper = app_module.step_parent.delay({"nap": 2})
    wait_for(lambda: seen("stepped"))
    other = app_module.parent.delay({})  # the one process is free while the sleeper naps
    assert other.get(timeout=10) == "ok"
    woke = wait_for(lambda: seen("woke"), timeout_s=20)
    finished = next(p for p in seen("parent") if p["run_id"] == other.id)
    assert finished["t"] < woke[0]["t"]
    assert woke[0]["t"] - seen("stepped")[0]["t"] >= 1.9  # slept on Redis time, once
    assert sleeper.get(timeout=10) == "ok"
    assert [s["attempt"] for s in seen("stepped")] == [0, 0]  # no retry spent
    assert body_runs(redis_url, sleeper.id) == 1
    # The receipt deferred inside the step runs once the run finalizes after its nap.
    runs = wait_for(lambda: seen("run"), timeout_s=20)
    assert [(r["defer_id"], r["parent"]) for r in runs] == [("in-step", sleeper.id)]


def test_a_deferred_runs_step_is_kept_across_a_retry_that_waited_on_flow_control(
    start_worker, app_module, seen, redis_url
):
    start_worker(concurrency=2)
    app_module.defer_one.delay("step-conc", {"retry_after": "2s"})
    first = wait_for(lambda: seen("stepped-run"))
    run_id = first[0]["run_id"]
    # A hog takes the shared slot before the retry is due, so the retry must wait.
    app_module.defer_one.delay("hog-conc", {"sleep": 3})
    wait_for(lambda: seen("start"))
    attempts = wait_for(lambda: len(seen("stepped-run")) == 2 and seen("stepped-run"), timeout_s=30)
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert attempts[1]["t"] >= seen("end")[0]["t"]  # it ran only once the hog let go
    assert body_runs(redis_url, run_id) == 1


def test_a_deferred_runs_step_sleep_frees_its_concurrency_slot_and_its_worker(
    start_worker, app_module, seen, redis_url
):
    start_worker(concurrency=1)
    app_module.defer_one.delay("step-conc", {"nap": 2})
    first = wait_for(lambda: seen("stepped-run"))
    # The hog shares the one concurrency slot: it runs only if the napping run let go.
    app_module.defer_one.delay("hog-conc", {"sleep": 0})
    hog_end = wait_for(lambda: seen("end"), timeout_s=20)
    woke = wait_for(lambda: seen("woke"), timeout_s=20)
    assert hog_end[0]["t"] < woke[0]["t"]
    assert [a["attempt"] for a in seen("stepped-run")] == [0, 0]  # no retry spent
    assert body_runs(redis_url, first[0]["run_id"]) == 1
