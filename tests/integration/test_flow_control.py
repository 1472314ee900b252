"""SPEC section 3 flow control, across several real worker processes sharing one Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from celery_defer.store import store_for
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def of(events: list[dict[str, Any]], fn: str) -> list[dict[str, Any]]:
    return [event for event in events if event["fn"] == f"defer/{fn}"]


def test_concurrency_limit_holds_across_worker_processes(start_worker, app_module, seen):
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    app_module.fan_out.delay("conc2", [{"sleep": 0.2, "i": i} for i in range(20)])
    wait_for(lambda: len(of(seen("end"), "conc2")) == 20, timeout_s=60)
    starts = of(seen("start"), "conc2")
    assert len(starts) == 20
    assert max(event["total"] for event in starts) == 2  # reached, never exceeded


def test_concurrency_with_a_key_limits_each_key_value(start_worker, app_module, seen):
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    items = [{"sleep": 0.3, "group": group} for _ in range(5) for group in ("a", "b")]
    app_module.fan_out.delay("conc-key", items)
    wait_for(lambda: len(of(seen("end"), "conc-key")) == 10, timeout_s=60)
    starts = of(seen("start"), "conc-key")
    assert max(event["n"] for event in starts) == 1  # per key value
    assert max(event["total"] for event in starts) == 2  # the keys do not share a limit


def test_a_slot_held_by_a_killed_worker_comes_back_within_the_lease(start_worker, app_module, seen):
    doomed = start_worker(concurrency=1, queues="hog")
    start_worker(concurrency=2)
    app_module.fan_out.delay("hog", [{"sleep": 60}])  # holds the one shared slot
    wait_for(lambda: of(seen("start"), "hog"))
    app_module.fan_out.delay("after-hog", [{"i": i} for i in range(3)])
    time.sleep(2)
    assert of(seen("start"), "after-hog") == []  # they wait for the slot
    doomed.kill()
    killed_at = time.time()
    wait_for(lambda: len(of(seen("end"), "after-hog")) == 3, timeout_s=30)
    first_after = min(event["t"] for event in of(seen("start"), "after-hog"))
    assert first_after - killed_at < 3 + 3  # the lease (defer_lease=3 s) plus a wait round


def test_throttle_spreads_starts_at_the_configured_pace(start_worker, app_module, seen):
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    app_module.fan_out.delay("throttled", [{"i": i} for i in range(20)])
    wait_for(lambda: len(of(seen("end"), "throttled")) == 20, timeout_s=60)
    times = sorted(event["t"] for event in of(seen("start"), "throttled"))
    # 5 per 2 s, one at a time: 19 gaps of 0.4 s between the 20 starts.
    assert times[-1] - times[0] == pytest.approx(19 * 0.4, rel=0.15)
    assert min(later - earlier for earlier, later in zip(times, times[5:], strict=False)) >= 2.0 * 0.85


def test_throttle_burst_lets_that_many_start_at_once(start_worker, app_module, seen):
    start_worker(concurrency=3)
    start_worker(concurrency=3)
    app_module.fan_out.delay("bursty", [{"i": i} for i in range(10)])
    wait_for(lambda: len(of(seen("end"), "bursty")) == 10, timeout_s=60)
    times = sorted(event["t"] for event in of(seen("start"), "bursty"))
    assert times[4] - times[0] < 1.0  # the burst of 5
    assert times[5] - times[0] >= 0.4 * 0.85  # then the pace


def test_rate_limit_drops_what_is_over_the_limit(start_worker, app_module, seen):
    worker = start_worker(concurrency=2)
    app_module.fan_out.delay("rated", [{"i": i} for i in range(8)])
    store = store_for(app_module.app)
    wait_for(lambda: store.stats.counters().get("dropped:rated:rate_limit") == 5)
    wait_for(lambda: len(of(seen("end"), "rated")) == 3)
    time.sleep(0.5)
    assert len(of(seen("start"), "rated")) == 3
    assert worker.log().count("dropped: rate_limit") == 5


def test_debounce_runs_once_with_the_last_data(start_worker, app_module, seen):
    start_worker(concurrency=2)
    app_module.fan_out.delay("debounced", [{"k": "x", "v": v} for v in range(5)])
    wait_for(lambda: of(seen("end"), "debounced"), timeout_s=20)
    time.sleep(1.5)
    runs = of(seen("start"), "debounced")
    assert [run["data"]["v"] for run in runs] == [4]


def test_debounce_timeout_caps_the_wait(start_worker, app_module, seen):
    start_worker(concurrency=2)
    sent_first = time.time()
    for v in range(8):  # a defer every 0.5 s for 4 s: the 1 s quiet period never comes
        app_module.fan_out.delay("debounced-cap", [{"k": "y", "v": v}])
        time.sleep(0.5)
    first_run = wait_for(lambda: of(seen("start"), "debounced-cap"), timeout_s=20)[0]
    assert first_run["t"] - sent_first < 2 + 1.5  # timeout 2 s, plus a check-back round


def test_idempotency_runs_once_per_key_value(start_worker, app_module, seen):
    start_worker(concurrency=2)
    app_module.fan_out.delay("idem", [{"k": k, "i": i} for i, k in enumerate("ababab")])
    store = store_for(app_module.app)
    wait_for(lambda: store.stats.counters().get("dropped:idem:idempotency") == 4)
    wait_for(lambda: len(of(seen("end"), "idem")) == 2)
    assert sorted(run["data"]["k"] for run in of(seen("start"), "idem")) == ["a", "b"]


def test_singleton_skip_drops_the_newcomer(start_worker, app_module, seen):
    start_worker(concurrency=2)
    app_module.fan_out.delay("single-skip", [{"k": "s", "sleep": 30, "first": True}])
    wait_for(lambda: of(seen("start"), "single-skip"))
    app_module.fan_out.delay("single-skip", [{"k": "s"}])
    store = store_for(app_module.app)
    wait_for(lambda: store.stats.counters().get("dropped:single-skip:singleton") == 1)
    assert [run["data"].get("first") for run in of(seen("start"), "single-skip")] == [True]


def test_singleton_cancel_cancels_the_running_one(start_worker, app_module, seen):
    start_worker(concurrency=2)
    app_module.fan_out.delay("single-cancel", [{"k": "c", "sleep": 30, "first": True}])
    wait_for(lambda: of(seen("start"), "single-cancel"))
    app_module.fan_out.delay("single-cancel", [{"k": "c", "second": True}])
    ended = wait_for(lambda: of(seen("end"), "single-cancel"), timeout_s=20)
    assert [run["data"].get("second") for run in ended] == [True]
    time.sleep(1)
    assert len(of(seen("end"), "single-cancel")) == 1  # the first never finished


@pytest.mark.slow
def test_singleton_cancel_behind_a_wait_still_cancels_and_never_runs_two_at_once(
    start_worker, app_module, seen
):
    start_worker(concurrency=2)
    fn = "single-cancel-throttled"
    app_module.fan_out.delay(fn, [{"k": "c", "sleep": 9, "first": True}])
    first = wait_for(lambda: of(seen("start"), fn))[0]
    # The newcomer waits ~3 s on the throttle before it may start.
    app_module.fan_out.delay(fn, [{"k": "c", "second": True}])
    ended = wait_for(lambda: of(seen("end"), fn), timeout_s=20)
    assert [run["data"].get("second") for run in ended] == [True]
    second = next(run for run in of(seen("start"), fn) if run["data"].get("second"))
    assert second["t"] - first["t"] >= 2.5  # it did wait on the throttle
    assert second["n"] == 1  # the first had ended (its finally ran) before the second began
    # Had the wait freed the lock, the first would have run on to its end.
    wait_for(lambda: time.time() > first["t"] + 11, timeout_s=15)
    assert [run["data"].get("second") for run in of(seen("end"), fn)] == [True]


def test_a_run_dropped_by_the_rate_limit_does_not_use_up_its_idempotency_key(start_worker, app_module, seen):
    start_worker()
    store = store_for(app_module.app)
    fn = "idem-rated"
    app_module.fan_out.delay(fn, [{"k": "a"}])
    wait_for(lambda: of(seen("end"), fn))
    app_module.fan_out.delay(fn, [{"k": "b"}])  # over the rate limit: dropped
    wait_for(lambda: store.stats.counters().get(f"dropped:{fn}:rate_limit") == 1)
    time.sleep(2.2)  # the rate window passes
    app_module.fan_out.delay(fn, [{"k": "b"}])
    wait_for(lambda: [run["data"]["k"] for run in of(seen("end"), fn)] == ["a", "b"])
    assert f"dropped:{fn}:idempotency" not in store.stats.counters()


def test_singleton_cancel_starts_the_newcomer_only_once_the_cancelled_run_ended(
    start_worker, app_module, seen
):
    start_worker(concurrency=2)
    first = {"k": "c", "sleep": 30, "cleanup": 1, "first": True}  # its cleanup takes 1 s
    app_module.fan_out.delay("single-cancel", [first])
    wait_for(lambda: of(seen("start"), "single-cancel"))
    app_module.fan_out.delay("single-cancel", [{"k": "c", "second": True}])
    ended = wait_for(lambda: of(seen("end"), "single-cancel"), timeout_s=20)
    assert [run["data"].get("second") for run in ended] == [True]
    second = next(run for run in of(seen("start"), "single-cancel") if run["data"].get("second"))
    assert second["n"] == 1  # the cancelled run, cleanup included, had ended: never two at once
